/**
 * The bytes of a bundle on their way to tar-stream's extractor: decompressed by what they are
 * (not by the file name), and cut at the tar's end-of-archive marker.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { SourceError } from '../errors.ts';

const BLOCK = 512;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Compressions a bundle may not use, by their magic bytes, and how to say it. */
const REFUSED: ReadonlyArray<readonly [Buffer, string]> = [
  [Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), 'zstd'],
  [Buffer.from('BZh'), 'bzip2'],
  [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz'],
];

/**
 * True for a block tar-stream reads as a header: an all-zero block (end of archive), the
 * `ustar` magic at offset 257 (POSIX and GNU formats), or, for v7 archives (no magic), a valid
 * header checksum.
 */
export function isTarBlock(block: Buffer): boolean {
  if (block.length < BLOCK) return false;
  if (block.subarray(0, BLOCK).equals(ZERO_BLOCK)) return true;
  if (block.subarray(257, 262).toString('latin1') === 'ustar') return true;
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < BLOCK; i++) if (i < 148 || i >= 156) sum += block[i]!;
  return sum === parseInt(block.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim(), 8);
}

/**
 * An async-generator pipeline stage: gunzips a bundle whose first bytes are gzip's (`1f 8b`),
 * passes a plain tar as it is, and refuses anything else with a {@link SourceError} naming what it
 * is (zstd, bzip2, xz). A `.tar.gz` holding a plain tar (as a Cloud Storage object stored with
 * `Content-Encoding: gzip` reads, decompressed by the client) or a `.tar` holding gzip both work.
 * `onKind` learns which it was, for messages. 0 bytes pass (as nothing).
 */
export function decompressed(origin: string, onKind: (gzip: boolean) => void) {
  return async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const { head, rest } = await headOf(source, BLOCK);
    if (head.length === 0) return;
    const gzip = head[0] === 0x1f && head[1] === 0x8b;
    onKind(gzip);
    if (!gzip) {
      yield* plainTar(head, rest, origin, '');
      return;
    }
    const gunzip = createGunzip();
    pipeline(Readable.from(rest, { objectMode: false }), gunzip, () => {}); // errors reach the iteration below
    const inner = await headOf(gunzip, BLOCK);
    if (inner.head.length === 0) return;
    yield* plainTar(inner.head, inner.rest, origin, 'is gzip-compressed but ');
  };
}

async function* plainTar(head: Buffer, rest: AsyncIterable<Buffer>, origin: string, prefix: string): AsyncGenerator<Buffer> {
  for (const [magic, name] of REFUSED) {
    if (head.subarray(0, magic.length).equals(magic)) throw new SourceError(origin, `${prefix}is ${name}-compressed; bundles may be .tar or gzip-compressed .tar`);
  }
  if (!isTarBlock(head)) {
    throw new SourceError(origin, `${prefix}is not a tar archive: ${head.length < BLOCK ? `it holds ${head.length} bytes, less than one tar header` : 'its first block is not a tar header'}; bundles may be .tar or gzip-compressed .tar`);
  }
  yield* rest;
}

/**
 * The first `n` bytes of `source` (fewer at its end), and an iterable of all of its bytes from
 * the start. Leaving `rest` early returns `source`'s iterator (which destroys a stream).
 */
async function headOf(source: AsyncIterable<Buffer>, n: number): Promise<{ head: Buffer; rest: AsyncIterable<Buffer> }> {
  const it = source[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let have = 0;
  while (have < n) {
    const step = await it.next();
    if (step.done) break;
    parts.push(step.value);
    have += step.value.length;
  }
  const head = Buffer.concat(parts, have);
  async function* rest(): AsyncGenerator<Buffer> {
    yield head;
    yield* { [Symbol.asyncIterator]: () => it };
  }
  return { head, rest: rest() };
}

/** Type flags tar-stream knows ('\0', '0'–'7', PAX and GNU long-name headers). */
const KNOWN_FLAGS = new Set([0, ...'01234567xgKLN'].map((c) => (typeof c === 'number' ? c : c.charCodeAt(0))));
const META_FLAGS = new Set([...'xgKLN'].map((c) => c.charCodeAt(0)));
/** tar-stream's limit on a PAX or long-name header's data. */
const MAX_META_BYTES = 4 * 1024 * 1024;

/**
 * Passes a tar stream on up to and including its end-of-archive marker (two zero blocks where a
 * header is due), then reads the rest to its end and drops it, as GNU tar (without
 * `--ignore-zeros`) and Go's archive/tar do: `cat a.tar b.tar` holds only a's entries, and notes
 * appended after the marker are not "unexpected data". tar-stream itself skips zero blocks and
 * reads on.
 *
 * A lone zero block followed by anything but a second one fails the stream, naming the block's
 * offset. Readers disagree on such an archive: GNU tar stops there with a warning ("A lone zero
 * block at N") and exit status 0, bsdtar stops silently, Go's archive/tar fails (ErrHeader),
 * tar-stream and `tar --ignore-zeros` read on. Reading on, the layer would hold files `tar tf`
 * does not list; stopping, it would lack files with no more than a warning nobody reads in a
 * Cloud Function. Such an archive is damaged or was pieced together by hand either way. A lone
 * zero block at the very end of the input is accepted: every one of those readers ends there.
 *
 * To know where headers are it follows the entry sizes as tar-stream computes them (the header's
 * size field, a PAX `size` record, no data for a directory). On input it cannot follow (a size it
 * cannot parse) it stops looking and passes everything on: tar-stream then reports the problem.
 * It also notes the type flag of each header tar-stream reports with type `null`, by offset
 * ({@link unknownFlags}), so a refusal can name it.
 */
export class TarEnd extends Transform {
  /** Type flags tar-stream does not know, as characters, by the offset of their header. */
  readonly unknownFlags = new Map<number, string>();
  #pos = 0; // stream offset of the chunk being looked at
  #skip = 0; // bytes of data (with padding) before the next header
  #parts: Buffer[] = [];
  #have = 0;
  #want = BLOCK; // a header, or the records of a PAX header ('x' or 'g')
  #records: 'x' | 'g' | undefined;
  #paxSize: string | undefined;
  #globalSize: string | undefined;
  #zeros = 0;
  #state: 'reading' | 'ended' | 'lost' = 'reading';

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    // Past the marker the input is still read to its end, and dropped: the gzip trailer (CRC-32,
    // length) and a download's checksum come last, and a bundle damaged there must fail, not
    // pass because reading stopped early (nor should a download be cut off mid-body).
    if (this.#state === 'ended') return callback();
    try {
      this.#scan(chunk);
    } catch (err) {
      return callback(err as Error);
    }
    callback();
  }

  #scan(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && this.#state === 'reading') {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - at);
        this.#skip -= n;
        at += n;
        continue;
      }
      const n = Math.min(this.#want - this.#have, chunk.length - at);
      this.#parts.push(chunk.subarray(at, at + n));
      this.#have += n;
      at += n;
      if (this.#have < this.#want) break;
      const data = Buffer.concat(this.#parts, this.#have);
      this.#parts = [];
      this.#have = 0;
      if (this.#records) this.#paxRecords(data);
      else this.#header(data, this.#pos + at - BLOCK);
    }
    const ended = (this.#state as string) === 'ended'; // #header may have changed it
    this.#pos += chunk.length;
    if (!ended || at > 0) this.push(ended ? chunk.subarray(0, at) : chunk);
  }

  #header(block: Buffer, offset: number): void {
    this.#want = BLOCK;
    if (block.equals(ZERO_BLOCK)) {
      if (++this.#zeros === 2) this.#state = 'ended';
      return;
    }
    if (this.#zeros === 1) {
      throw new Error(
        `a lone zero block at byte ${offset - BLOCK} of the tar is followed by more of the archive: GNU tar and bsdtar stop reading there, other readers go on, so which files the bundle holds is unclear; it is damaged or was pieced together, re-create it with tar`,
      );
    }
    const flag = block[156]!;
    const size = octal(block.subarray(124, 136));
    if (size === undefined || size < 0) return void (this.#state = 'lost');
    if (!KNOWN_FLAGS.has(flag)) this.unknownFlags.set(offset, String.fromCharCode(flag));
    // Old GNU sparse ('S') headers are followed by extension blocks tar-stream does not know;
    // the bundle refuses the entry, so there is no need to follow them.
    if (flag === 0x53) return void (this.#state = 'lost');
    if (META_FLAGS.has(flag)) {
      if (size > MAX_META_BYTES) return void (this.#state = 'lost');
      if (flag === 0x78 || flag === 0x67) {
        // The records come first, then their padding (skipped once they are read: #paxRecords).
        this.#records = flag === 0x78 ? 'x' : 'g';
        this.#want = size;
        if (size === 0) this.#paxRecords(Buffer.alloc(0));
      } else this.#skip = size + padding(size);
      return;
    }
    // tar-stream: a PAX `size` record (a global one only with a local header) wins; directories have no data.
    const record = this.#paxSize;
    this.#paxSize = undefined;
    const dataSize = record ? parseInt(record, 10) : size;
    if (!(dataSize >= 0) || !Number.isSafeInteger(dataSize)) return void (this.#state = 'lost');
    this.#skip = isDirectory(block) ? 0 : dataSize + padding(dataSize);
  }

  #paxRecords(data: Buffer): void {
    const size = paxRecord(data, 'size');
    if (this.#records === 'g') this.#globalSize = size; // a global header replaces the previous one
    else this.#paxSize = size ?? this.#globalSize;
    this.#records = undefined;
    this.#want = BLOCK;
    this.#skip = padding(data.length);
  }
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** As tar-stream decides it: type flag '5', or a file type whose raw name ends in '/'. */
function isDirectory(block: Buffer): boolean {
  const flag = block[156];
  if (flag === 0x35) return true;
  if (flag !== 0 && flag !== 0x30) return false;
  const end = block.indexOf(0);
  const nameEnd = end === -1 || end > 100 ? 100 : end;
  if (nameEnd > 0) return block[nameEnd - 1] === 0x2f;
  return block.subarray(257, 263).toString('latin1') === 'ustar\0' && block[345] !== 0; // "prefix/" + ""
}

/** A numeric header field as tar-stream reads it: octal, or base-256 when its first bit is set. */
function octal(field: Buffer): number | undefined {
  if (field[0]! & 0x80) {
    if (field[0] !== 0x80 && field[0] !== 0xff) return undefined;
    let sum = 0;
    for (let i = 1; i < field.length; i++) sum = sum * 256 + (field[0] === 0x80 ? field[i]! : 0xff - field[i]!);
    return field[0] === 0x80 ? sum : -sum;
  }
  let start = 0;
  while (start < field.length && field[start] === 0x20) start++;
  let end = field.indexOf(0x20, start);
  if (end === -1) end = field.length;
  while (start < end && field[start] === 0) start++;
  if (start === end) return 0;
  const n = parseInt(field.subarray(start, end).toString('latin1'), 8);
  return Number.isNaN(n) ? undefined : n;
}

/** The last value of `key` in PAX records, parsed as tar-stream parses them; undefined without one. */
function paxRecord(buf: Buffer, key: string): string | undefined {
  let value: string | undefined;
  while (buf.length) {
    let i = 0;
    while (i < buf.length && buf[i] !== 0x20) i++;
    const len = parseInt(buf.subarray(0, i).toString(), 10);
    if (!len) break;
    const record = buf.subarray(i + 1, len - 1).toString();
    const eq = record.indexOf('=');
    if (eq === -1) break;
    if (record.slice(0, eq) === key) value = record.slice(eq + 1);
    buf = buf.subarray(len);
  }
  return value;
}
