/**
 * The bytes of a bundle on their way to tar-stream's extractor: decompressed by what they are
 * (not by the file name).
 */
import { Readable } from 'node:stream';
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
