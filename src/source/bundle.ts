/**
 * Re-packs a `.tar` / `.tar.gz` bundle into layer entries on the fly: the bundle's bytes flow
 * through gunzip (when they are gzip, whatever the name says) and tar-stream's extractor, and each file entry's content *is* the extractor's
 * entry stream. Nothing touches the disk and memory stays at a few buffers.
 *
 * The price: entries must be consumed in order. A file's content is readable only until the
 * next entry is requested; the layer writer (src/layer/tar.ts) reads each entry's stream to its
 * end before asking for the next, which is exactly that. An entry whose content was not read is
 * skipped (drained) when the next one is requested.
 *
 * Bundles come from users, so every header is checked: `..` or absolute names, names or link
 * targets longer than PATH_MAX ({@link MAX_PATH_BYTES}) or deeper than {@link MAX_PATH_DEPTH}
 * components, NUL characters, names that are not UTF-8, hardlinks to anything not earlier in the
 * same bundle (one to a symlink becomes that symlink; see src/source/sparse.ts for sparse files), links named
 * after the bundle's root (`.`), devices, FIFOs and unknown types are rejected with a
 * {@link SourceError} naming the bundle and the entry. Truncated data (fewer bytes than a
 * header's size) fails too, both here and in the layer writer's byte count, and so does a bundle
 * with no tar header at all (0 bytes, or a gzip of nothing), which GNU tar calls "not a tar
 * archive". A tar of only end-of-archive blocks (`tar cf x.tar -T /dev/null`) is a valid empty
 * bundle, as GNU tar reads it. Reading stops at the end-of-archive marker: what follows it (a
 * second archive `cat`ed on, notes) is ignored, as GNU tar and Go's archive/tar ignore it. A lone
 * zero block followed by more of the archive, where GNU tar stops with only a warning, is refused
 * (see {@link TarEnd}). v7 archives are read; GNU volume labels are skipped.
 */
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream';
import tarStream from 'tar-stream';
import type { Header as TarHeader } from 'tar-stream';

// `offset`: where the entry's header starts in the tar stream (tar-stream's Source has it).
type TarEntry = Readable & { readonly header: TarHeader; readonly offset: number };
import { SourceError } from '../errors.ts';
import type { LayerEntry } from '../layer/entry.ts';
import { MAX_PATH_BYTES, notUtf8Error, pathLimitProblem, shownPath, validateLinkTarget } from '../layer/tar.ts';
import { expandSparse, SPARSE_UNSUPPORTED, sparseOf } from './sparse.ts';
import { decompressed, TarEnd } from './tar-input.ts';

export interface BundleOptions {
  /** Directory in the image receiving the entries ("/" or "/app"). */
  readonly to: string;
  /** For messages: "gs://bucket/dist.tar.gz". */
  readonly origin: string;
  /**
   * Turns an error of the underlying byte stream (network, storage) into the error to report,
   * e.g. a temporary one. Errors of the tar/gzip format are always non-temporary SourceErrors.
   */
  readonly mapReadError?: (err: unknown) => Error;
}

/**
 * Normalises a tar member name (or a hardlink's target, `what`) to a path relative to the bundle
 * root; '' for the root itself. Messages name the entry with at most its first characters.
 */
export function bundlePath(name: string, origin: string, what = 'entry name'): string {
  const where = `${origin}#${shownPath(name)}`;
  // A cheap guard on the raw name first (it is split and normalised next); the limits themselves
  // apply to the path as it lands, without `./` prefixes or trailing slashes (`tar -C dir -cf
  // x.tar .` writes every name as ./…/).
  if (name.length > 2 * MAX_PATH_BYTES) throw new SourceError(where, `${what} is ${Buffer.byteLength(name)} bytes long; at most ${MAX_PATH_BYTES} are allowed`);
  if (name.includes('\0')) throw new SourceError(where, `${what} contains a NUL character`);
  // tar-stream decodes names (and PAX records) as UTF-8, replacing what is not with U+FFFD.
  if (name.includes('\uFFFD')) throw notUtf8Error(where, what === 'entry name' ? 'file name' : what);
  if (name.startsWith('/')) throw new SourceError(where, 'absolute path in bundle (entries must be relative)');
  if (name.split('/').includes('..')) throw new SourceError(where, 'path with ".." in bundle (entries must stay inside it)');
  const norm = path.posix.normalize(name).replace(/\/+$/, '');
  const rel = norm === '.' ? '' : norm.replace(/^(\.\/)+/, '');
  const tooLong = pathLimitProblem(rel);
  if (tooLong) throw new SourceError(where, `${what} ${tooLong}`);
  return rel;
}

/** What a path of the bundle holds, for its hardlinks: a file (first written at `path`) or a symlink. */
type Node = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'symlink'; readonly target: string };

function join(to: string, rel: string): string {
  return path.posix.join('/', to, rel).replace(/^\/+/, '').replace(/\/+$/, '');
}

/**
 * Entries of one pass over a bundle. `open` returns a fresh stream of the bundle's bytes (each
 * pass re-opens it: the layer may be built more than once).
 */
export async function* bundleEntries(open: () => Promise<Readable>, opts: BundleOptions): AsyncGenerator<LayerEntry> {
  const raw = await open();
  // v7 archives (`tar --format=v7`) have no magic; the header checksum still guards each header.
  const extract = tarStream.extract({ allowUnknownFormat: true } as Parameters<typeof tarStream.extract>[0]);
  const end = new TarEnd();
  let readError: Error | undefined;
  raw.once('error', (err) => {
    readError = opts.mapReadError ? opts.mapReadError(err) : err;
  });
  // Known once the first bytes are in: the bundle is gzip-compressed (whatever its name says).
  let gzip = false;
  const formatError = (err: unknown): Error => {
    if (readError) return readError;
    if (err instanceof SourceError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    return new SourceError(opts.origin, `not a valid ${gzip ? '.tar.gz' : '.tar'} bundle: ${msg}`, { cause: err });
  };
  // Counts the tar bytes (after gunzip) on their way to the extractor: none at all is not a tar.
  let tarBytes = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      tarBytes += chunk.length;
      callback(null, chunk);
    },
  });
  const decompress = decompressed(opts.origin, (isGzip) => (gzip = isGzip));
  // pipeline tears every stage down on error; the iterator below sees the extractor's error.
  (pipeline as (...args: unknown[]) => void)(raw, decompress, count, end, extract, () => {});

  /**
   * What each path earlier in the bundle is, shared by its hardlinks as an inode is: a hardlink
   * names a path, and lands as what that path was when it was written.
   */
  const nodes = new Map<string, Node>();
  const iterator = (extract as unknown as AsyncIterable<TarEntry>)[Symbol.asyncIterator]();
  try {
    for (;;) {
      let step: IteratorResult<TarEntry>;
      try {
        step = await iterator.next();
      } catch (err) {
        throw formatError(err);
      }
      if (step.done) break;
      const stream = step.value;
      const header = stream.header;
      // A type tar-stream does not know: its flag, as the header has it.
      const flag = header.type === null ? end.unknownFlags.get(stream.offset) : undefined;
      end.unknownFlags.delete(stream.offset);
      if (flag === 'V') {
        // A GNU volume label (`tar -V`): the archive's name, not a file.
        stream.resume();
        continue;
      }
      if (flag === 'S') throw new SourceError(`${opts.origin}#${shownPath(header.name)}`, SPARSE_UNSUPPORTED);
      // A GNU sparse file in PAX form: its header is named GNUSparseFile.<pid>/NAME.
      const sparse = header.type === 'file' ? sparseOf(header.pax as Record<string, string> | null, `${opts.origin}#${shownPath(header.name)}`) : undefined;
      const name = sparse?.name ?? header.name;
      const rel = bundlePath(name, opts.origin);
      const where = `${opts.origin}#${shownPath(name)}`;
      if (rel === '' && header.type !== 'directory') {
        // "." or "./": the entry would land at `to` itself (a symlink there hides the base's directory).
        const kind = header.type === 'link' ? 'hardlink' : (header.type ?? 'file');
        throw new SourceError(where, `a ${kind} cannot be named after the bundle's root: it would replace ${opts.to} itself (only a directory entry may be named ".")`);
      }
      const mode = (header.mode ?? 0o644) & 0o7777;
      let entry: LayerEntry | undefined;
      let consumed = false;
      switch (header.type) {
        case 'directory':
          nodes.delete(rel);
          if (rel !== '') entry = { path: join(opts.to, rel), type: 'directory', mode, size: 0, origin: where };
          break;
        case 'file':
        case 'contiguous-file': {
          const stored = header.size ?? 0;
          if (!Number.isSafeInteger(stored) || stored < 0) throw new SourceError(where, `invalid size ${String(header.size)}`);
          const size = sparse ? sparse.size : stored;
          nodes.set(rel, { kind: 'file', path: rel });
          entry = {
            path: join(opts.to, rel),
            type: 'file',
            mode,
            size,
            origin: where,
            open: async () => {
              if (consumed) throw new SourceError(where, 'bundle entry content read twice in one pass');
              consumed = true;
              const bytes = stream as unknown as AsyncIterable<Buffer>;
              return Readable.from(content(sparse ? expandSparse(bytes, sparse, stored, where) : bytes, formatError), { objectMode: false });
            },
          };
          break;
        }
        case 'symlink':
          if (!header.linkname) throw new SourceError(where, 'symlink without a target');
          validateLinkTarget(header.linkname, where);
          if (header.linkname.includes('\uFFFD')) throw notUtf8Error(where, 'symlink target');
          nodes.set(rel, { kind: 'symlink', target: header.linkname });
          entry = { path: join(opts.to, rel), type: 'symlink', mode: 0o777, size: 0, linkname: header.linkname, origin: where };
          break;
        case 'link': {
          const target = bundlePath(header.linkname ?? '', opts.origin, 'hardlink target');
          const node = nodes.get(target);
          if (!node) throw new SourceError(where, `hardlink to "${shownPath(header.linkname ?? '')}", which is not a file or symlink earlier in the bundle`);
          nodes.set(rel, node);
          if (node.kind === 'symlink') {
            // GNU tar and bsdtar record `ln s s2` of a symlink as a hardlink to it; a layer
            // hardlink must name a regular file, so it becomes the symlink it is (as -f writes it).
            entry = { path: join(opts.to, rel), type: 'symlink', mode: 0o777, size: 0, linkname: node.target, origin: where };
            break;
          }
          // A hardlink to a hardlink names the file itself while that path still holds it.
          const file = nodes.get(node.path) === node ? node.path : target;
          entry = { path: join(opts.to, rel), type: 'hardlink', mode, size: 0, linkname: join(opts.to, file), origin: where };
          break;
        }
        case 'character-device':
        case 'block-device':
          throw new SourceError(where, 'device files are not allowed in a bundle');
        case 'fifo':
          throw new SourceError(where, 'FIFOs are not allowed in a bundle');
        default:
          throw new SourceError(where, `unsupported tar entry type ${flag !== undefined ? `'${shownPath(flag)}'` : `"${String(header.type)}"`}`);
      }
      if (entry) yield entry;
      if (!consumed) stream.resume();
    }
    if (readError) throw readError;
    if (tarBytes === 0) {
      throw new SourceError(opts.origin, `not a valid ${gzip ? '.tar.gz' : '.tar'} bundle: it holds no tar data at all (${gzip ? 'a gzip of nothing' : '0 bytes'}); an empty bundle is a tar of end-of-archive blocks`);
    }
  } finally {
    // Stops reading the bundle when the consumer stops early or an entry was rejected.
    raw.destroy();
    extract.destroy();
  }
}

/** An entry's bytes, with a failure of the bundle's stream reported as the bundle's error. */
async function* content(stream: AsyncIterable<Buffer>, formatError: (err: unknown) => Error): AsyncGenerator<Buffer> {
  try {
    yield* stream;
  } catch (err) {
    throw formatError(err);
  }
}
