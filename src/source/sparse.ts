/**
 * GNU sparse files in a bundle's PAX records, as `tar --sparse --format=posix` (format 1.0 by
 * default, 0.1 with `--sparse-version=0.1`) and bsdtar write them: the archive holds only the
 * data fragments, and a map of where they go. They are expanded as Go's archive/tar (Docker's
 * and BuildKit's ADD) expands them, streaming, with zeros made for the holes: the layer holds
 * the same bytes as for the file added from disk.
 *
 * Not supported (refused by the bundle reader): format 0.0 (repeated `GNU.sparse.offset`
 * records, which tar-stream's record map keeps only the last of) and old GNU 'S' headers.
 */
import { SourceError } from '../errors.ts';

export interface Sparse {
  /** The file's real name (`GNU.sparse.name`; the header's own is `GNUSparseFile.<pid>/NAME`). */
  readonly name: string | undefined;
  /** The file's real size. */
  readonly size: number;
  /** [offset, length] of each data fragment; undefined for format 1.0, whose map leads the data. */
  readonly map: ReadonlyArray<readonly [number, number]> | undefined;
}

const BLOCK = 512;
/** The most bytes a format 1.0 map may take (Go's archive/tar allows as much). */
const MAX_MAP_BYTES = 1024 * 1024;
const ZEROS = Buffer.alloc(64 * 1024);
/**
 * How much larger than its stored data a sparse file may expand: a hole costs nothing in the
 * archive but every zero of it in the layer (compressing zeros until the build times out, for a
 * few KiB claiming a petabyte). 1 GiB, plus 1,024 times what it stores (a gzip bomb's ratio).
 */
const MAX_SPARSE_SLACK = 1024 ** 3;
const MAX_SPARSE_RATIO = 1024;

/** Why a sparse entry is refused, continuing "…: " after the entry's name. */
export const SPARSE_UNSUPPORTED = 'is a sparse file in a form that is not supported (GNU tar --sparse with --format=gnu or --sparse-version=0.0): re-create the bundle with --format=posix, or without --sparse';

/** The sparse file an entry's PAX records describe, or undefined for an ordinary entry. */
export function sparseOf(pax: Readonly<Record<string, string>> | null | undefined, where: string): Sparse | undefined {
  if (!pax || !Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) return undefined;
  const name = pax['GNU.sparse.name'];
  if (pax['GNU.sparse.major'] === '1' && pax['GNU.sparse.minor'] === '0') {
    return { name, size: decimal(pax['GNU.sparse.realsize'], where), map: undefined };
  }
  const map = pax['GNU.sparse.map'];
  if (map === undefined) throw new SourceError(where, SPARSE_UNSUPPORTED);
  const numbers = map === '' ? [] : map.split(',').map((n) => decimal(n, where));
  if (numbers.length % 2 !== 0) throw new SourceError(where, 'sparse map has an odd number of values');
  const pairs = Array.from({ length: numbers.length / 2 }, (_, i) => [numbers[2 * i]!, numbers[2 * i + 1]!] as const);
  return { name, size: decimal(pax['GNU.sparse.size'] ?? pax['GNU.sparse.realsize'], where), map: pairs };
}

/**
 * The expanded bytes of a sparse entry whose archived data (`stored` bytes: for format 1.0 the
 * map's blocks, then the fragments) is `data`. Fails when the map and the data disagree.
 */
export async function* expandSparse(data: AsyncIterable<Buffer>, sparse: Sparse, stored: number, where: string): AsyncGenerator<Buffer> {
  const most = MAX_SPARSE_SLACK + MAX_SPARSE_RATIO * stored;
  if (sparse.size > most) {
    throw new SourceError(where, `is a sparse file of ${sparse.size} bytes holding ${stored}: at most ${most} (1 GiB + ${MAX_SPARSE_RATIO} times the stored bytes) are expanded into a layer`);
  }
  const it = data[Symbol.asyncIterator]();
  let buffered: Buffer = Buffer.alloc(0);
  const next = async (max: number): Promise<Buffer> => {
    if (buffered.length === 0) {
      const step = await it.next();
      if (step.done) throw new SourceError(where, 'sparse file data ends before its map says');
      buffered = step.value;
    }
    const chunk = buffered.subarray(0, max);
    buffered = buffered.subarray(chunk.length);
    return chunk;
  };
  let map = sparse.map;
  let mapBytes = 0;
  if (!map) {
    // Format 1.0: decimal numbers, one a line (count, then offset/length pairs), padded to a block.
    const numbers: number[] = [];
    let text = '';
    while (numbers.length === 0 || numbers.length < 1 + 2 * numbers[0]!) {
      if ((mapBytes += BLOCK) > MAX_MAP_BYTES) throw new SourceError(where, `sparse map is longer than ${MAX_MAP_BYTES} bytes`);
      for (let have = 0; have < BLOCK; ) {
        const chunk = await next(BLOCK - have);
        text += chunk.toString('latin1');
        have += chunk.length;
      }
      const lines = text.split('\n');
      text = lines.pop()!;
      for (const line of lines) if (numbers.length === 0 || numbers.length < 1 + 2 * numbers[0]!) numbers.push(decimal(line, where));
    }
    map = Array.from({ length: numbers[0]! }, (_, i) => [numbers[1 + 2 * i]!, numbers[2 + 2 * i]!] as const);
  }
  let end = 0;
  let total = mapBytes;
  for (const [offset, length] of map) {
    if (offset < end || offset + length > sparse.size) throw new SourceError(where, `sparse map is invalid: fragment at ${offset} (+${length}) overlaps another or lies past the file's end (${sparse.size})`);
    end = offset + length;
    total += length;
  }
  if (total !== stored) throw new SourceError(where, `sparse map names ${total - mapBytes} bytes of data, but the entry holds ${stored - mapBytes}`);
  let pos = 0;
  for (const [offset, length] of [...map, [sparse.size, 0] as const]) {
    for (; pos < offset; pos += Math.min(ZEROS.length, offset - pos)) yield ZEROS.subarray(0, Math.min(ZEROS.length, offset - pos));
    for (let left = length; left > 0; ) {
      const chunk = await next(left);
      left -= chunk.length;
      yield chunk;
    }
    pos = offset + length;
  }
  // Read to its end, not returned: destroying a tar-stream entry destroys the whole extractor.
  if (buffered.length > 0 || !(await it.next()).done) throw new SourceError(where, 'sparse file data goes on past its map');
}

function decimal(value: string | undefined, where: string): number {
  const n = value !== undefined && /^[0-9]{1,16}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw new SourceError(where, `sparse file record "${String(value).slice(0, 40)}" is not a size`);
  return n;
}
