import type { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import type { Header, Pack } from 'tar-stream';
import { AbortedError, asSourceError, SourceError, UsageError } from '../errors.ts';
import type { LayerPolicy } from '../build/request.ts';
import type { LayerEntry } from './entry.ts';
import type { BufferPool } from './pool.ts';

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const SPECIAL_BITS = 0o6000; // setuid | setgid; the sticky bit is kept
/**
 * The largest owner id tar-stream writes into a ustar header: it encodes uid and gid in 6 octal
 * digits (262143), not the 7 the field has room for, and writes 777777 for anything larger.
 * Larger ones go into PAX records.
 */
const MAX_USTAR_ID = 0o777777;
/** The largest owner id (32 bits, as Linux's uid_t; OpenShift assigns ids like 1000680000). */
export const MAX_OWNER_ID = 0xffffffff;
/**
 * The latest mtime the layer's tar can carry, 2038-01-19T03:14:07Z: a ustar header's 11 octal
 * digits would hold up to the year 2242, but tar-stream computes the field as `seconds | 0`, a
 * 32-bit signed integer, so a later one came out as garbage (GNU tar read 2242-03-16).
 */
export const MAX_MTIME = 2 ** 31 - 1;

type Sink = ReturnType<Pack['entry']>;
type TarHeader = Partial<Header> & Pick<Header, 'name'>;

/**
 * Writes `entries` as a reproducible tar stream (tar-stream's packer):
 * every entry gets `policy.mtime`, uid/gid 0 (or `policy.chown`) and empty user/group names,
 * permission bits are kept but setuid/setgid are dropped unless `policy.keepSpecialBits`.
 * Directory names end in `/`. Long or non-ASCII names get PAX headers.
 *
 * Parent directories that no entry describes are *not* written, as Docker's `COPY` leaves the
 * base's directories alone: an entry for `usr/` or `tmp/` would replace the base's own on
 * extraction (its mode, its owner — with `--chown`, the build's user — and, where the base has a
 * symlink such as merged-usr's `bin -> usr/bin`, the link itself, hiding every base binary).
 * Runtimes create a missing parent when they extract a child (containerd, Docker, umoci, GNU tar
 * all do), and follow an existing symlinked one. Directories the sources yield (`-f conf/`) are
 * written with their own mode and owner.
 *
 * The tar is only as ordered as `entries`; sources yield them sorted. An entry whose path is not
 * normalised and relative, or whose delivered byte count differs from its `size`, fails the
 * stream with a {@link SourceError} naming the entry's origin.
 *
 * Caveat (tar-stream): a header field of 0 means "default" to the packer, so headers always
 * carry the file-type bits in `mode` (masked off when encoded) to keep mode 0000 files exact.
 *
 * The chunks come as tar-stream produces them (headers, file bodies, padding; no copies): the
 * layer pass reads them directly, so no stream stage re-buffers (and copies) the bytes before
 * gzip cuts them into members. Ending the iteration early destroys the packer and stops reading.
 *
 * With a `pool`, sources may read file contents into its memory; the consumer then releases
 * each chunk to it once the bytes are copied (see {@link BufferPool}).
 */
export function packEntries(
  entries: AsyncIterable<LayerEntry>,
  policy: LayerPolicy,
  signal?: AbortSignal,
  pool?: BufferPool,
  limits: LayerLimits = NO_LAYER_LIMITS,
): Pack & AsyncIterable<Buffer> {
  const owner = policy.chown ?? { uid: 0, gid: 0 };
  for (const id of [owner.uid, owner.gid]) {
    if (!Number.isInteger(id) || id < 0 || id > MAX_OWNER_ID) throw new UsageError(`owner id ${id} is out of range 0..${MAX_OWNER_ID}`);
  }
  if (!Number.isInteger(policy.mtime) || policy.mtime < 0 || policy.mtime > MAX_MTIME) {
    throw new UsageError(`layer mtime ${policy.mtime} is not a valid timestamp in seconds`);
  }
  const pack = tarStream.pack();
  const onAbort = (): void => {
    pack.destroy(new AbortedError('layer build aborted', { cause: signal?.reason }));
  };
  if (signal?.aborted) queueMicrotask(onAbort);
  else signal?.addEventListener('abort', onAbort, { once: true });
  pack.once('close', () => signal?.removeEventListener('abort', onAbort));

  const writer = new Writer(pack, policy, owner, pool, limits);
  writer.run(entries).then(
    () => pack.finalize(),
    (err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return pack as Pack & AsyncIterable<Buffer>; // tar-stream's types say `unknown`; its chunks are Buffers
}

/**
 * The longest path or link target a layer may hold, in UTF-8 bytes: Linux's PATH_MAX, so every
 * runtime can create what it extracts. Tar itself has no limit (tar-stream reads PAX names up to
 * 4 MiB), and the writer's per-entry checks cost time in proportion to a path's length × depth.
 */
export const MAX_PATH_BYTES = 4096;
/** The most components (`a/b/c` has 3) a layer path may have: deeper trees are not real files. */
export const MAX_PATH_DEPTH = 256;
/**
 * The most distinct paths one layer may hold, its files and directories together (parents that
 * no entry names included), and the most UTF-8 bytes those paths may add up to. The writer
 * remembers every path it has seen, to refuse a file over a directory (see `#checkKind`), so
 * these bound its memory: a bundle of a few hundred KiB (gzip of 4,000-byte names that differ
 * in one digit) held 160 MiB after 20,000 entries and 490 MiB after 60,000, which kills a Cloud
 * Function of 512 MiB without a record. Measured on bundles, the reader's own index included:
 * ~430 bytes per short path (86 MiB for 200,000), ~2 bytes per byte of a long one, so the limits
 * keep both under ~130 MiB; real trees (a large node_modules) stay well below them.
 */
export const MAX_LAYER_PATHS = 300_000;
export const MAX_LAYER_PATH_BYTES = 32 * 1024 * 1024;

/** Bounds on the paths {@link packEntries} remembers: how many, and their UTF-8 bytes together. */
export interface LayerLimits {
  readonly paths: number;
  readonly pathBytes: number;
}
/**
 * The bounds for a layer built from input someone else controls: the Cloud Function applies them
 * to every build (a bucket writer's bundle must not run it out of memory). Other values only in
 * tests (a pass of 300,000 entries takes a minute there).
 */
export const LAYER_LIMITS: LayerLimits = { paths: MAX_LAYER_PATHS, pathBytes: MAX_LAYER_PATH_BYTES };
/**
 * No bounds: the default for the CLI and the library, whose caller owns both the files and the
 * memory (a monorepo's node_modules may pass 300,000 files, and docker takes it).
 */
export const NO_LAYER_LIMITS: LayerLimits = { paths: Infinity, pathBytes: Infinity };
/** How much of a refused path a message shows. */
const SHOWN_PATH_CHARS = 120;

/**
 * Checks that a layer path is POSIX, relative, normalised, free of `..`, at most
 * {@link MAX_PATH_BYTES} long and at most {@link MAX_PATH_DEPTH} components deep. Hardlink targets
 * (`what`) are layer paths too. The message shows at most the path's first characters.
 */
export function validatePath(p: string, origin: string, what = 'path'): void {
  const tooLong = pathLimitProblem(p);
  if (tooLong) throw new SourceError(origin, `${what} "${shownPath(p)}" in layer ${tooLong}`);
  const bad =
    p === '' ||
    p.startsWith('/') ||
    p.endsWith('/') ||
    p.includes('\0') ||
    p.split('/').some((part) => part === '' || part === '.' || part === '..');
  if (bad) throw new SourceError(origin, `invalid ${what} "${shownPath(p)}" in layer: must be relative, normalised and without ".."`);
}

/**
 * How a layer path (or a bundle's relative one) breaks {@link MAX_PATH_BYTES} or
 * {@link MAX_PATH_DEPTH}, as the end of a sentence ("is 5000 bytes long; at most 4096 are
 * allowed"); undefined when it does not.
 */
export function pathLimitProblem(p: string): string | undefined {
  const bytes = Buffer.byteLength(p);
  if (bytes > MAX_PATH_BYTES) return `is ${bytes} bytes long; at most ${MAX_PATH_BYTES} are allowed`;
  // Counted, not split: validatePath splits the path for its own check, once per entry.
  let depth = p === '' ? 0 : 1;
  for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) depth++;
  if (depth > MAX_PATH_DEPTH) return `has ${depth} components; at most ${MAX_PATH_DEPTH} are allowed`;
  return undefined;
}

/**
 * Checks a symlink target: kept verbatim (it may be absolute or contain `..`: it is resolved in
 * the container), but never with a NUL (a tar header would cut it there) and at most
 * {@link MAX_PATH_BYTES} long.
 */
export function validateLinkTarget(target: string, origin: string): void {
  const bytes = Buffer.byteLength(target);
  if (bytes > MAX_PATH_BYTES) {
    throw new SourceError(origin, `symlink target "${shownPath(target)}" is ${bytes} bytes long; at most ${MAX_PATH_BYTES} are allowed`);
  }
  if (target.includes('\0')) throw new SourceError(origin, `symlink target "${shownPath(target)}" contains a NUL character`);
}

/**
 * The refusal of a name that is not UTF-8 (`what`: "file name", "symlink target", "hardlink
 * target"), for every source alike. Node decodes such bytes to U+FFFD, so two different names
 * (Latin-1 `caf\xe9` and `caf\xe8`) would land at one path; layer paths are UTF-8, as PAX
 * records are.
 */
export function notUtf8Error(origin: string, what: string, options?: { cause?: unknown }): SourceError {
  return new SourceError(origin, `the ${what} is not valid UTF-8, which image layer paths must be; rename it`, options);
}

/** A path for a message: NULs and other control characters escaped, cut after a few characters. */
export function shownPath(p: string): string {
  const head = p.length > SHOWN_PATH_CHARS ? `${p.slice(0, SHOWN_PATH_CHARS)}…` : p;
  return head.replace(/[\0-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

class Writer {
  readonly #pack: Pack;
  readonly #mtime: Date;
  readonly #policy: LayerPolicy;
  readonly #owner: { uid: number; gid: number };
  /**
   * PAX `uid`/`gid` records for ids a ustar field cannot hold (its own field then says 0, as Go's
   * archive/tar writes it; tar-stream would clamp it to 2097151), or undefined. Readers that
   * honour PAX names, as every container runtime must, honour these. The same for every entry.
   */
  readonly #largeIds: Readonly<Record<string, string>> | undefined;
  readonly #pool: BufferPool | undefined;
  readonly #limits: LayerLimits;
  readonly #dirs = new Set<string>();
  /** Paths written as something other than a directory, with where they came from. */
  readonly #nonDirs = new Map<string, string>();
  /** Paths whose latest entry is a regular file (or a hardlink to one): what a hardlink may name. */
  readonly #regular = new Set<string>();
  /** UTF-8 bytes of the paths in {@link #dirs} and {@link #nonDirs} (see {@link MAX_LAYER_PATH_BYTES}). */
  #pathBytes = 0;
  #closed = false;

  constructor(pack: Pack, policy: LayerPolicy, owner: { uid: number; gid: number }, pool: BufferPool | undefined, limits: LayerLimits) {
    this.#pack = pack;
    this.#limits = limits;
    this.#pool = pool;
    this.#policy = policy;
    this.#owner = owner;
    const large = { ...(owner.uid > MAX_USTAR_ID ? { uid: String(owner.uid) } : {}), ...(owner.gid > MAX_USTAR_ID ? { gid: String(owner.gid) } : {}) };
    this.#largeIds = Object.keys(large).length ? large : undefined;
    this.#mtime = new Date(policy.mtime * 1000);
    pack.once('close', () => {
      this.#closed = true;
    });
  }

  async run(entries: AsyncIterable<LayerEntry>): Promise<void> {
    for await (const entry of entries) {
      if (this.#closed) return;
      validatePath(entry.path, entry.origin);
      this.#checkKind(entry);
      this.#parents(entry.path);
      this.#checkSize(entry);
      await this.#entry(entry);
    }
  }

  /** Refuses the entry that takes the layer past its {@link LayerLimits} ({@link MAX_LAYER_PATHS}, {@link MAX_LAYER_PATH_BYTES}). */
  #checkSize(entry: LayerEntry): void {
    const { paths, pathBytes } = this.#limits;
    if (this.#dirs.size + this.#nonDirs.size > paths) {
      throw new SourceError(entry.origin, `the layer holds more than ${paths} files and directories; at most ${paths} are allowed`);
    }
    if (this.#pathBytes > pathBytes) {
      throw new SourceError(entry.origin, `the paths of the layer's files and directories add up to more than ${pathBytes} bytes; at most ${pathBytes} are allowed`);
    }
  }

  /** Counts a path new to {@link #dirs} or {@link #nonDirs}. */
  #noteNew(p: string): void {
    if (!this.#dirs.has(p) && !this.#nonDirs.has(p)) this.#pathBytes += Buffer.byteLength(p);
  }

  /**
   * A path is a directory or it is not, for the whole layer: a file under something written as a
   * file, or a file where a directory was written, would extract differently on different
   * runtimes. Local sources check this before the first byte; streamed ones (Cloud Storage
   * objects, bundle entries) are checked here. The same path twice with the same kind is allowed
   * (the later one wins on extraction).
   */
  #checkKind(entry: LayerEntry): void {
    for (let i = entry.path.lastIndexOf('/'); i > 0; i = entry.path.lastIndexOf('/', i - 1)) {
      const parent = entry.path.slice(0, i);
      // A known directory was checked with all its ancestors when it was noted (#parents, or its
      // own entry), and nothing is ever a file and a directory at once: nothing above it can be a
      // file. Without this stop every entry re-checked its whole ancestry (~3 % of a pass over
      // 5,000 files).
      if (this.#dirs.has(parent)) break;
      const from = this.#nonDirs.get(parent);
      if (from !== undefined) {
        throw new SourceError(entry.origin, `cannot be added at /${entry.path}: /${parent} is not a directory (from ${from})`);
      }
    }
    if (entry.type === 'directory') {
      const from = this.#nonDirs.get(entry.path);
      if (from !== undefined) throw new SourceError(entry.origin, `cannot be a directory at /${entry.path}: it was added as a file (from ${from})`);
      this.#noteNew(entry.path);
      this.#dirs.add(entry.path);
    } else {
      if (this.#dirs.has(entry.path)) throw new SourceError(entry.origin, `cannot be added at /${entry.path}: a directory is there already`);
      if (entry.type === 'hardlink') this.#checkHardlink(entry);
      this.#noteNew(entry.path);
      this.#nonDirs.set(entry.path, entry.origin);
      if (entry.type === 'symlink') this.#regular.delete(entry.path);
      else this.#regular.add(entry.path);
    }
  }

  /**
   * A hardlink must name a regular file written earlier in this layer, and not itself: runtimes
   * remove the path before linking (so a self-link loses the file and fails), and a target that a
   * later entry turned into a symlink would make the "hardlink" a second way through that link.
   */
  #checkHardlink(entry: LayerEntry): void {
    if (entry.linkname === undefined) throw new SourceError(entry.origin, 'hardlink without a target');
    const target = entry.linkname;
    validatePath(target, entry.origin, 'hardlink target');
    if (target === entry.path) throw new SourceError(entry.origin, `hardlink /${shownPath(entry.path)} points at itself`);
    if (!this.#regular.has(target)) {
      throw new SourceError(entry.origin, `hardlink /${shownPath(entry.path)} points at /${shownPath(target)}, which is not a regular file earlier in the layer`);
    }
  }

  /** Notes every ancestor of `p` as a directory (for {@link #checkKind}); writes nothing. */
  #parents(p: string): void {
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) {
      const dir = p.slice(0, i);
      if (this.#dirs.has(dir)) break;
      this.#noteNew(dir);
      this.#dirs.add(dir);
    }
  }

  #header(name: string, type: TarHeader['type'], mode: number, extra: Partial<TarHeader> = {}): TarHeader {
    // A fresh object every time: tar-stream mutates the headers it is given.
    const { uid, gid } = this.#owner;
    return {
      name,
      type,
      mode,
      uid: uid > MAX_USTAR_ID ? 0 : uid,
      gid: gid > MAX_USTAR_ID ? 0 : gid,
      uname: '',
      gname: '',
      mtime: new Date(this.#mtime.getTime()),
      size: 0,
      ...(this.#largeIds ? { pax: { ...this.#largeIds } } : {}),
      ...extra,
    };
  }

  #mode(entry: LayerEntry): number {
    const mode = entry.mode & 0o7777;
    return this.#policy.keepSpecialBits ? mode : mode & ~SPECIAL_BITS;
  }

  async #entry(entry: LayerEntry): Promise<void> {
    switch (entry.type) {
      case 'directory':
        return this.#add(this.#header(entry.path + '/', 'directory', S_IFDIR | this.#mode(entry)));
      case 'symlink':
        if (entry.linkname === undefined || entry.linkname === '') {
          throw new SourceError(entry.origin, 'symlink without a target');
        }
        validateLinkTarget(entry.linkname, entry.origin);
        return this.#add(this.#header(entry.path, 'symlink', S_IFLNK | (entry.mode & 0o777), { linkname: entry.linkname }));
      case 'hardlink':
        if (entry.linkname === undefined) throw new SourceError(entry.origin, 'hardlink without a target');
        validatePath(entry.linkname, entry.origin, 'hardlink target');
        return this.#add(this.#header(entry.path, 'link', S_IFREG | this.#mode(entry), { linkname: entry.linkname }));
      case 'file':
        return this.#file(entry);
      default:
        throw new SourceError(entry.origin, `unsupported entry type ${String((entry as LayerEntry).type)}`);
    }
  }

  async #file(entry: LayerEntry): Promise<void> {
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
      throw new SourceError(entry.origin, `invalid size ${entry.size}`);
    }
    const header = this.#header(entry.path, 'file', S_IFREG | this.#mode(entry), { size: entry.size });
    // With no body at all, tar-stream would wait for one (its file sink ends only when written to).
    if (entry.size === 0 && !entry.open) return this.#add(header, EMPTY);
    if (!entry.open) throw new SourceError(entry.origin, 'regular file without content');
    let body: Readable | Uint8Array | AsyncIterable<Uint8Array>;
    try {
      body = await entry.open(this.#pool);
    } catch (err) {
      throw asSourceError(err, entry.origin);
    }
    if (body instanceof Uint8Array) {
      if (body.byteLength !== entry.size) throw sizeChanged(entry, body.byteLength);
      return this.#add(header, asBuffer(body));
    }
    await this.#stream(header, body, entry);
  }

  async #stream(header: TarHeader, body: Readable | AsyncIterable<Uint8Array>, entry: LayerEntry): Promise<void> {
    let done!: Promise<void>;
    const sink = this.#open(header, (p) => {
      done = p;
      p.catch(() => {});
    });
    let written = 0;
    try {
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        written += chunk.byteLength;
        if (written > entry.size) throw sizeChanged(entry, written, true);
        if (!sink.write(asBuffer(chunk))) await drained(sink);
        if (this.#closed) throw new Error('tar stream closed');
      }
    } catch (err) {
      // Destroy the entry with the real error: tar-stream hands it on to the whole pack.
      const e = asSourceError(err, entry.origin);
      if ('destroy' in body) body.destroy(); // an iterable was closed by leaving the loop
      sink.destroy(e);
      throw e;
    }
    if (written !== entry.size) {
      const e = sizeChanged(entry, written);
      sink.destroy(e);
      throw e;
    }
    sink.end(undefined);
    await done;
  }

  /** Adds an entry with no body, or with its whole body in `data`, and waits until it is packed. */
  #add(header: TarHeader, data?: Buffer): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('tar stream closed'));
    return new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      const sink = data ? this.#pack.entry(header, data, cb) : this.#pack.entry(header, cb);
      sink.on('error', () => {}); // reported through `cb` and the pack
    });
  }

  #open(header: TarHeader, setDone: (p: Promise<void>) => void): Sink {
    if (this.#closed) throw new Error('tar stream closed');
    let sink!: Sink;
    setDone(
      new Promise<void>((resolve, reject) => {
        sink = this.#pack.entry(header, (err) => (err ? reject(err) : resolve()));
      }),
    );
    // The entry's error reaches the pack (and the consumer) through tar-stream; these two
    // listeners only keep it from also surfacing as an uncaught exception / unhandled rejection.
    sink.on('error', () => {});
    return sink;
  }
}

/** The body of an empty file that has no `open`. */
const EMPTY = Buffer.alloc(0);

/** The same bytes as a Buffer (tar-stream takes nothing else), without a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function drained(sink: Sink): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('tar entry closed'));
    };
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
}

function sizeChanged(entry: LayerEntry, got: number, atLeast = false): SourceError {
  return new SourceError(
    entry.origin,
    `changed while being read: expected ${entry.size} bytes, got ${atLeast ? 'more than ' + entry.size : got}`,
  );
}
