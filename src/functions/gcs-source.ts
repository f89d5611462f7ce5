/**
 * Files for a build from Cloud Storage: the objects a spec names, beside the spec object, or one
 * bundle object. Objects are listed once, when the build starts, and each is pinned to the
 * generation seen then; every pass streams exactly those generations
 * (`file.createReadStream()` with `generation`), so a concurrent overwrite cannot mix versions
 * into one image, and no byte goes to a temp file.
 *
 * If a pinned generation disappears mid-build (overwritten in a bucket without versioning), the
 * read fails with a *temporary* error: the retried event lists the objects again.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type { Bucket, File } from '@google-cloud/storage';
import { AbortedError, ArtificerError, SourceError } from '../errors.ts';
import type { EntrySource, LayerEntry } from '../layer/entry.ts';
import type { FileSpec } from '../spec/spec.ts';
import { bundleEntries } from '../source/bundle.ts';
import { directoryDestination, fileDestination, imagePath } from '../source/destination.ts';
import { MAX_LAYER_PATHS, MAX_PATH_BYTES } from '../layer/tar.ts';

/**
 * Objects downloaded ahead of the one being packed. Each download pays a round trip to Cloud
 * Storage before its first byte (~20–50 ms from a function; ~3.5 ms even on loopback, where
 * the client library's own work dominates), so a folder of many small files was bound by
 * latency, one object at a time.
 */
export const READ_AHEAD_OBJECTS = 16;
/**
 * Only objects this small are fetched ahead: each fits whole into its stream's buffer, so its
 * download finishes (and its connection is free) before the writer gets to it, and at most
 * {@link READ_AHEAD_OBJECTS} × this is held. Larger objects are opened when their turn comes.
 */
export const READ_AHEAD_MAX_BYTES = 1024 * 1024;
/** Default permission bits of an object: Cloud Storage keeps none (unless gcloud's --preserve-posix did). */
export const DEFAULT_OBJECT_MODE = 0o644;
/** Permission bits of the directories a folder item's object names imply. */
export const DEFAULT_DIR_MODE = 0o755;
/** Custom metadata key `gcloud storage cp --preserve-posix` writes (octal string). */
export const POSIX_MODE_KEY = 'goog-reserved-posix-mode';
/**
 * Custom metadata key `gcloud storage cp --preserve-symlinks` sets to "true" on the object it
 * stores for a symlink, whose content is the link's target (checked with gcloud 2026-11).
 */
export const SYMLINK_KEY = 'goog-reserved-file-is-symlink';

/**
 * The most an object stored gzip-encoded may hold uncompressed. Cloud Storage serves such an
 * object (`Content-Encoding: gzip`, as `gcloud storage cp -Z` or `gsutil cp -z` upload it)
 * compressed and the client decompresses it: its file is the uncompressed bytes, whose size no
 * metadata gives, and a tar header needs the size before the bytes. So it is read whole into
 * memory before its entry is written.
 */
export const MAX_DECODED_BYTES = 32 * 1024 * 1024;

interface PinnedObject {
  readonly name: string;
  readonly generation: string;
  /** Stored size (for a gzip-encoded object, of its compressed bytes). */
  readonly size: number;
  readonly dest: string;
  readonly mode: number;
  /** Stored with `Content-Encoding: gzip`: the bytes read are not the stored ones (see {@link MAX_DECODED_BYTES}). */
  readonly gzipEncoded: boolean;
  /** A symlink as `gcloud storage cp --preserve-symlinks` stores one ({@link SYMLINK_KEY}): its content is the target. */
  readonly symlink: boolean;
}

/** A folder item's entry, and for a file the object it is read from. */
interface Listed {
  readonly entry: LayerEntry;
  readonly object?: PinnedObject;
}

type PinnedItem =
  /** `dirs`: the directories below a folder item's destination that its objects imply. */
  | { readonly kind: 'objects'; readonly objects: readonly PinnedObject[]; readonly dirs: readonly string[]; readonly origin: string }
  | { readonly kind: 'bundle'; readonly object: PinnedObject; readonly to: string };

/**
 * A file the spec names is not in the bucket. Permanent in itself, but the handler retries it for
 * a short while after the upload: `gcloud storage cp -r` uploads a folder's objects in no
 * particular order, so the spec's event may come before the files it names.
 */
export class MissingObjectError extends SourceError {}

/**
 * The spec's files are still arriving: an object it names was created after the spec, less than
 * {@link UPLOAD_QUIET_MS} ago. Retried like a {@link MissingObjectError} (the same grace).
 */
export class UploadInProgressError extends MissingObjectError {}

/**
 * How long no object a spec names may have been created, when one was created after the spec,
 * before the build takes what is there. `gcloud storage cp -r` of a folder holding the spec
 * uploads in parallel, in no order; an object newer than the spec proves that the upload went on
 * after the spec landed, and may still be going on. A spec uploaded after its files never waits.
 */
export const UPLOAD_QUIET_MS = 5000;

/** True for Cloud Storage / network errors worth retrying (429, 408, 5xx, resets, timeouts). */
export function isTemporaryGcsError(err: unknown): boolean {
  if (err instanceof ArtificerError) return err.temporary;
  const e = err as { code?: unknown; status?: unknown; cause?: unknown } | undefined;
  const status = typeof e?.code === 'number' ? e.code : typeof e?.status === 'number' ? e.status : undefined;
  if (status !== undefined) return status === 408 || status === 429 || status >= 500;
  if (typeof e?.code === 'string') {
    // CONTENT_DOWNLOAD_MISMATCH: @google-cloud/storage's checksum check of a download failed;
    // its documentation says to download again.
    return /^(CONTENT_DOWNLOAD_MISMATCH|ECONNRESET|ECONNREFUSED|ETIMEDOUT|EPIPE|EAI_AGAIN|ENOTFOUND|ENETUNREACH|EHOSTUNREACH|UND_ERR_.*|ERR_STREAM_PREMATURE_CLOSE)$/.test(e.code);
  }
  if (e?.cause !== undefined && e.cause !== err) return isTemporaryGcsError(e.cause);
  return false;
}

export function gcsStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Turns a storage error into an artificer error, temporary when worth a retry. */
export function storageError(err: unknown, url: string, doing: string): ArtificerError {
  if (err instanceof ArtificerError) return err;
  if (gcsStatus(err) === 404) {
    return new SourceError(url, `${doing}: the object changed or was deleted during the build`, { cause: err, temporary: true });
  }
  return new SourceError(url, `${doing}: ${describe(err)}`, { cause: err, temporary: isTemporaryGcsError(err) });
}

function objectMode(metadata: Record<string, unknown> | undefined, override: number | undefined): number {
  if (override !== undefined) return override;
  const posix = (metadata?.metadata as Record<string, unknown> | undefined)?.[POSIX_MODE_KEY];
  if (typeof posix === 'string' && /^[0-7]{1,7}$/.test(posix)) return parseInt(posix, 8) & 0o7777;
  return DEFAULT_OBJECT_MODE;
}

export interface GcsSourceOptions {
  readonly bucket: Bucket;
  /** The spec object's name; spec paths are relative to its folder. */
  readonly specName: string;
  readonly files: readonly FileSpec[];
  /**
   * Stops the pinning between requests (the build's deadline): a spec names any number of items,
   * one request or more each, which may take longer than the function may run.
   */
  readonly signal?: AbortSignal;
  /** Most objects pinned, over all items; default {@link MAX_LAYER_PATHS} (tests give fewer). */
  readonly maxObjects?: number;
}

/** Objects per listing page of a folder item (the API's most). */
const LIST_PAGE = 1000;

export interface PinnedSource {
  readonly source: EntrySource;
  /** How many objects, and how many bytes, the source reads per pass. */
  readonly objects: number;
  readonly bytes: number;
  /**
   * sha256 (hex) of everything the entries are made of: the bucket, the mode given to implied
   * directories, and per item in order, each object's name, pinned generation, size, destination
   * and mode (or a bundle's object and how it is unpacked). Equal fingerprints mean the same
   * entries with the same bytes: a generation names one immutable content. (How entries become
   * tar bytes is versioned by LAYER_FORMAT.)
   */
  readonly fingerprint: string;
  /** The object (of those pinned) created last, and when (ms since the epoch); undefined with none. */
  readonly newest?: { readonly name: string; readonly created: number };
}

/**
 * Lists and pins every object the spec names, then returns the re-openable source. Throws a
 * {@link SourceError} for a missing object (a user mistake: files must be uploaded before the
 * spec), temporary for storage failures.
 *
 * Order: items in spec order (a later item's entry overrides an earlier one's at the same path
 * when the layer is extracted); objects of one folder item sorted by destination; bundle
 * entries in the bundle's own order.
 */
export async function pinGcsSource(opts: GcsSourceOptions): Promise<PinnedSource> {
  const dir = path.posix.dirname(opts.specName);
  const prefix = dir === '.' ? '' : `${dir}/`;
  const gs = (name: string): string => `gs://${opts.bucket.name}/${name}`;
  const items: PinnedItem[] = [];
  let objects = 0;
  let bytes = 0;
  // Not part of PinnedObject: its creation time says nothing of its content (the fingerprint).
  let newest: { name: string; created: number } | undefined;

  // The layer holds no more paths than MAX_LAYER_PATHS, so no more objects are pinned: a spec of
  // 10,000 items naming one folder of 1,000 objects held 10 million of them in memory, listed
  // before the layer writer counts a path. Counted as they are listed, page by page.
  const maxObjects = opts.maxObjects ?? MAX_LAYER_PATHS;
  const tooMany = (name: string): SourceError =>
    new SourceError(gs(name), `the spec's items name more than ${maxObjects} objects (an object named by several items counts for each); at most ${maxObjects} go into a layer`);

  const pin = (f: File, dest: string, mode: number | undefined): PinnedObject => {
    const md = f.metadata as Record<string, unknown>;
    const size = Number(md.size ?? 0);
    if (objects >= maxObjects) throw tooMany(f.name);
    objects++;
    bytes += size;
    const created = Date.parse(String(md.timeCreated ?? ''));
    if (!Number.isNaN(created) && (!newest || created > newest.created)) newest = { name: f.name, created };
    const gzipEncoded = /(^|,)\s*gzip\s*($|,)/i.test(String(md.contentEncoding ?? ''));
    const symlink = (md.metadata as Record<string, unknown> | undefined)?.[SYMLINK_KEY] === 'true';
    return { name: f.name, generation: String(md.generation), size, dest, mode: objectMode(md, mode), gzipEncoded, symlink };
  };

  const checkSignal = (): void => {
    if (opts.signal?.aborted) throw new AbortedError('listing the spec\'s objects: aborted', { cause: opts.signal.reason });
  };

  const list = async (p: string): Promise<File[]> => {
    const out: File[] = [];
    let query: Record<string, unknown> | null = { prefix: p, autoPaginate: false, maxResults: LIST_PAGE };
    while (query) {
      checkSignal();
      let page: File[];
      try {
        const [files, next] = (await opts.bucket.getFiles(query)) as unknown as [File[], Record<string, unknown> | null | undefined];
        page = files;
        query = next ?? null;
      } catch (err) {
        throw storageError(err, gs(p), 'listing objects');
      }
      for (const f of page) if (!f.name.endsWith('/')) out.push(f); // folder placeholders
      if (objects + out.length > maxObjects) throw tooMany(out[maxObjects - objects]!.name);
    }
    return out;
  };

  const stat = async (name: string): Promise<File | undefined> => {
    checkSignal();
    const f = opts.bucket.file(name);
    try {
      await f.getMetadata();
      return f;
    } catch (err) {
      if (gcsStatus(err) === 404) return undefined;
      throw storageError(err, gs(name), 'reading object metadata');
    }
  };

  for (const item of opts.files) {
    if (item.kind === 'bundle') {
      const name = prefix + item.bundle;
      const found = await stat(name);
      if (!found) throw new MissingObjectError(gs(name), 'bundle object not found (upload the files before the spec)');
      // Not checkContentObject: a bundle stored gzip-encoded (`gcloud storage cp -Z` of a .tar.gz)
      // reads as a plain tar, which the bundle reader recognises by its bytes; its stored size
      // only decides whether a download abandoned early is drained or cut.
      items.push({ kind: 'bundle', object: pin(found, '', undefined), to: item.to });
      continue;
    }
    const name = prefix + item.from.replace(/\/$/, '');
    const base = path.posix.basename(name);
    const origin = gs(item.from.endsWith('/') ? `${name}/` : name);
    const exact = item.from.endsWith('/') ? undefined : await stat(name);
    const pinned: PinnedObject[] = [];
    const dirs = new Set<string>();
    if (exact) {
      const o = pin(exact, fileDestination(item.to, base, origin), item.mode);
      if (o.symlink) {
        throw symlinkProblem(
          gs(exact.name),
          ', named as an item of its own: a symlink is not followed in the bucket (a local one given to --files would be); name the object it points to, or the folder that holds both',
        );
      }
      pinned.push(checkContentObject(o, gs(exact.name)));
    } else {
      // A folder: every object under it; its contents go to `to`, or to /basename.
      const under = await list(`${name}/`);
      if (under.length === 0) {
        throw new MissingObjectError(origin, `no such object${item.from.endsWith('/') ? 's under this folder' : ' or folder'} (upload the files before the spec)`);
      }
      const root = directoryDestination(item.to, base, origin);
      for (const f of under) {
        const rel = f.name.slice(name.length + 1);
        // Object names are free text: `a/../../etc/cron.d/x` under a folder would normalise to a
        // path outside its destination. Refused, as a bundle refuses "..".
        if (rel.split('/').some((part) => part === '..' || part === '.')) {
          throw new SourceError(gs(f.name), 'object name has a "." or ".." segment: objects under a folder item must stay inside it');
        }
        const dest = imagePath(root === '' ? rel : `${root}/${rel}`, gs(f.name));
        pinned.push(checkContentObject(pin(f, dest, item.mode), gs(f.name)));
        // Its folders below the destination are the upload's own directories (owned like the
        // files, as a local directory's are); the destination itself stays the base's.
        for (let i = dest.lastIndexOf('/'); i > root.length; i = dest.lastIndexOf('/', i - 1)) dirs.add(dest.slice(0, i));
      }
      pinned.sort((a, b) => Buffer.compare(Buffer.from(a.dest), Buffer.from(b.dest)));
    }
    items.push({ kind: 'objects', objects: pinned, dirs: [...dirs], origin });
  }

  const bucket = opts.bucket;
  const read = (o: PinnedObject): Readable => {
    const url = `${gs(o.name)}#${o.generation}`;
    const out = new PassThrough({ highWaterMark: READ_AHEAD_MAX_BYTES });
    // Validation (crc32c/md5) stays on: a corrupted read fails instead of building a wrong image.
    const download = bucket.file(o.name, { generation: Number(o.generation) }).createReadStream();
    // Not pipeline(): it would destroy `out` with the client's raw error first, so the reader saw
    // Cloud Storage's JSON instead of what went wrong, and a 404 (the pinned generation is gone)
    // was not temporary. `on`, not `once`: a download may report more than one error.
    download.on('error', (err) => out.destroy(storageError(err, url, 'reading')));
    // Read to the end, or abandoned (the pass failed, or a download read ahead was not needed):
    // a small download is drained, not destroyed. @google-cloud/storage 8.4 answers a download
    // destroyed mid-body by destroying its shared keep-alive agent, which cuts every other
    // download of the process (the next pass's too), and those it retries were cut again when
    // abandoned in turn. A large one, too big to drain, is destroyed, but not before Cloud
    // Storage has answered: the library then pipes the answer into the destroyed stream, which
    // throws where nothing catches it (an unhandled rejection, which ends the function's process).
    let answered = false;
    download.once('response', () => (answered = true));
    out.once('close', () => {
      if (o.size <= READ_AHEAD_MAX_BYTES) {
        download.unpipe(out);
        download.resume();
      } else if (answered) download.destroy();
      else download.once('response', () => setImmediate(() => download.destroy()));
    });
    download.pipe(out);
    return out;
  };

  /**
   * The entry of an object whose entry depends on its content: a symlink placeholder (the
   * target), or a gzip-encoded object (its uncompressed size). Its download is opened through
   * the entry's own `open` (so it may have been read ahead, and reads ahead in turn) and read
   * whole when its turn comes.
   */
  const contentEntry = async (entry: LayerEntry, o: PinnedObject): Promise<LayerEntry> => {
    const url = gs(o.name);
    const max = o.symlink ? MAX_PATH_BYTES : MAX_DECODED_BYTES;
    const chunks: Buffer[] = [];
    let size = 0;
    const stream = (await entry.open!()) as Readable;
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        size += chunk.byteLength;
        if (size > max) throw o.symlink ? symlinkProblem(url, `: its target is longer than ${MAX_PATH_BYTES} bytes`) : tooLargeEncoded(url);
        chunks.push(chunk);
      }
    } finally {
      stream.destroy();
    }
    if (o.symlink) {
      if (size === 0) throw symlinkProblem(url, ': it holds no target');
      const { open: _open, ...rest } = entry;
      return { ...rest, type: 'symlink', mode: 0o777, size: 0, linkname: Buffer.concat(chunks, size).toString('utf8') };
    }
    return {
      ...entry,
      size,
      open: async () =>
        (async function* () {
          yield* chunks;
        })(),
    };
  };

  const source: EntrySource = async function* (): AsyncGenerator<LayerEntry> {
    // Downloads started ahead of the writer (this pass's own), each handed to its entry's open().
    const ahead = new Map<PinnedObject, Readable>();
    try {
      for (const item of items) {
        if (item.kind === 'objects') {
          // Sorted by destination when pinned: the order the writer opens them in.
          const files = item.objects;
          let started = 0; // files before this index have been read ahead or skipped
          // Called as the writer opens file `next - 1`: keeps up to READ_AHEAD_OBJECTS of the
          // small files after it downloading. Started by opens, not by yields, so a pass that
          // stops early (the build's preflight looks at the first entry only) downloads nothing
          // but, when the first entry is one, the object its entry needs the content of.
          const readAhead = (next: number): void => {
            for (started = Math.max(started, next); started < Math.min(files.length, next + READ_AHEAD_OBJECTS) && ahead.size < READ_AHEAD_OBJECTS; started++) {
              const o = files[started]!;
              if (o.size > READ_AHEAD_MAX_BYTES) continue;
              const stream = read(o);
              // Reported when its entry reads it; one never read (the pass failed first) is dropped.
              stream.on('error', () => {});
              ahead.set(o, stream);
            }
          };
          // An object's entry may depend on its content (contentEntry): each kept beside its object.
          const listed: Listed[] = [
            ...item.dirs.map((dir): Listed => ({ entry: { path: dir, type: 'directory', mode: DEFAULT_DIR_MODE, size: 0, origin: item.origin } })),
            ...files.map((o, i): Listed => ({
              object: o,
              entry: {
                path: o.dest,
                type: 'file',
                mode: o.mode,
                size: o.size,
                origin: gs(o.name),
                open: async () => {
                  const early = ahead.get(o);
                  ahead.delete(o);
                  const stream = early ?? read(o);
                  readAhead(i + 1);
                  return stream;
                },
              },
            })),
          ];
          listed.sort((a, b) => Buffer.compare(Buffer.from(a.entry.path), Buffer.from(b.entry.path)));
          for (const { entry, object: o } of listed) {
            yield o && (o.symlink || o.gzipEncoded) ? await contentEntry(entry, o) : entry;
          }
        } else {
          const o = item.object;
          yield* bundleEntries(async () => read(o), {
            to: item.to,
            origin: gs(o.name),
            mapReadError: (err) => storageError(err, gs(o.name), 'reading bundle'),
          });
        }
      }
    } finally {
      for (const stream of ahead.values()) stream.destroy();
      ahead.clear();
    }
  };
  // The directories' mode is this module's constant, not an object's: in the fingerprint too.
  const fingerprint = createHash('sha256').update(JSON.stringify({ bucket: opts.bucket.name, dirMode: DEFAULT_DIR_MODE, items })).digest('hex');
  return { source, objects, bytes, fingerprint, ...(newest ? { newest } : {}) };
}

/** A symlink placeholder ({@link SYMLINK_KEY}) that cannot be added; `why` continues the sentence. */
function symlinkProblem(url: string, why: string): SourceError {
  return new SourceError(url, `is a symlink uploaded with "gcloud storage cp --preserve-symlinks" (${SYMLINK_KEY})${why}`);
}

function tooLargeEncoded(url: string): SourceError {
  return new SourceError(
    url,
    `is stored gzip-encoded (Content-Encoding: gzip, as "gcloud storage cp -Z" uploads) and holds more than ${MAX_DECODED_BYTES / 1024 / 1024} MiB uncompressed; such an object is read into memory whole (its uncompressed size is known only then): upload it without -Z, or inside a bundle`,
  );
}

/**
 * Refuses, from its metadata alone, an object whose content would be refused once downloaded: a
 * symlink placeholder that is empty or longer than a path may be, a gzip-encoded object whose
 * stored bytes are already past {@link MAX_DECODED_BYTES}.
 */
function checkContentObject(o: PinnedObject, url: string): PinnedObject {
  if (o.symlink && !o.gzipEncoded && o.size === 0) throw symlinkProblem(url, ': it holds no target');
  if (o.symlink && !o.gzipEncoded && o.size > MAX_PATH_BYTES) throw symlinkProblem(url, `: its target is longer than ${MAX_PATH_BYTES} bytes`);
  if (o.gzipEncoded && o.size > MAX_DECODED_BYTES) throw tooLargeEncoded(url);
  return o;
}
