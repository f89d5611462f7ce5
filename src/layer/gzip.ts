import { availableParallelism } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import zlib from 'node:zlib';

/** Uncompressed bytes per gzip member. Fixed, so the output never depends on how input arrives. */
export const GZIP_MEMBER_BYTES = 1024 * 1024;
/** `gzip -1`: the fastest level; a layer is compressed once and pulled many times, but pushed now. */
export const DEFAULT_GZIP_LEVEL = 1;
/**
 * A member whose sample carries more than this many bits of information per byte (of at most 8)
 * is stored instead of compressed: deflate's entropy coding cannot get it below ~94 %, and data
 * like that is almost always compressed or encrypted already (archives, images, keys).
 */
export const STORE_ENTROPY = 7.5;
/** Bytes taken from each of four places in a member to estimate its entropy. */
const SAMPLE_SLICE = 4 * 1024;
/**
 * Size of the buffers zlib writes a member's output into. Every output piece is a view that keeps
 * its whole buffer alive until the upload has sent it: smaller buffers pin less memory (peak RSS
 * of a text layer −6 MiB at 256 KiB against 1 MiB) for an extra threadpool trip when a member
 * straddles two, with no measurable change in time.
 */
const ENGINE_OUTPUT_BYTES = 256 * 1024;
/** Members between two turns of the event loop (~5 µs each) when nothing else waits on it. */
const TURN_EVERY_MEMBERS = 4;
/** The gzip header's OS byte: 3 = Unix. zlib writes its build platform's code; fixed here. */
const OS_UNIX = 3;

export interface GzipOptions {
  /** zlib level 1..9 (default {@link DEFAULT_GZIP_LEVEL}). */
  readonly level?: number;
  /** Uncompressed bytes per member (default {@link GZIP_MEMBER_BYTES}). Changing it changes the output. */
  readonly memberBytes?: number;
  /**
   * Members compressed at once on the libuv threadpool (default: CPUs + 1, at most 4, the
   * default threadpool size: one more than the cores keeps each of them busy while the main
   * thread hands the next member over; more only holds memory, ~1.3 MiB a member). Does not
   * change the output.
   */
  readonly concurrency?: number;
  /**
   * Called with each member's uncompressed bytes, in order, just before it is handed to zlib:
   * a tap on the input (the layer hashes its diffID here, one update per member instead of one
   * per tar chunk, without a stream stage of its own). The buffer is reused afterwards; do not
   * keep it.
   */
  readonly onMember?: (data: Buffer) => void;
  /** Called with each input chunk once its bytes have been copied out of it (see `BufferPool`). */
  readonly release?: (chunk: Uint8Array) => void;
}

/**
 * Deterministic parallel gzip: the input is cut into fixed-size pieces, each compressed on its
 * own as a complete gzip member, and the members are concatenated in order. A multi-member
 * stream is valid gzip (RFC 1952 §2.2); GNU gzip, zlib's `gunzip`, Node's and Go's readers
 * (`compress/gzip` reads multistream by default) all decompress it to the concatenated data.
 *
 * Compression runs on the libuv threadpool through zlib's async API, so several members in
 * flight use every core without worker threads; at most `concurrency` are in flight, so memory
 * stays flat whatever the input size.
 *
 * Output is a function of the input bytes and the options only: member boundaries are fixed,
 * each header has mtime 0 and a fixed OS byte, and the store-or-compress decision for a member
 * looks only at that member's bytes (the entropy of a 16 KiB sample from four places; above
 * {@link STORE_ENTROPY} bits per byte the member is stored ({@link storedMember}), which costs a
 * CRC instead of a futile compression). Caveat: compressed members are the bytes of the zlib
 * that Node bundles; another zlib version may compress differently (the uncompressed diffID never
 * changes).
 */
export async function* parallelGzip(source: AsyncIterable<Uint8Array>, options: GzipOptions = {}): AsyncGenerator<Buffer> {
  const level = options.level ?? DEFAULT_GZIP_LEVEL;
  const memberBytes = options.memberBytes ?? GZIP_MEMBER_BYTES;
  const concurrency = Math.max(1, options.concurrency ?? Math.min(4, availableParallelism() + 1));
  if (!Number.isInteger(level) || level < 1 || level > 9) throw new RangeError(`gzip level ${level} is not in 1..9`);
  if (!Number.isInteger(memberBytes) || memberBytes < 1) throw new RangeError(`gzip member size ${memberBytes} is invalid`);

  const engines = new Engines(level);
  const queue: Promise<Buffer[]>[] = [];
  // Input buffers are recycled once zlib has finished with them: a steady state allocates only
  // the compressed output, which keeps garbage (and so RSS) low between collections.
  const free: Buffer[] = [];
  const take = (): Buffer => free.pop() ?? Buffer.allocUnsafeSlow(memberBytes);
  const onMember = options.onMember;
  const release = options.release;
  const start = (data: Buffer): void => {
    onMember?.(data);
    if (sampleEntropy(data) > STORE_ENTROPY) {
      // The stored member's blocks are views of `data`, so it is not recycled.
      queue.push(Promise.resolve(storedMember(data)));
      return;
    }
    const p = engines.member(data);
    p.then(
      () => data.byteLength === memberBytes && free.length <= concurrency && free.push(data),
      () => {}, // awaited in order below; this only stops an early failure being "unhandled"
    );
    queue.push(p);
  };
  try {
    let buf = take();
    let fill = 0;
    let members = 0;
    for await (const chunk of source) {
      let off = 0;
      while (off < chunk.byteLength) {
        const n = Math.min(memberBytes - fill, chunk.byteLength - off);
        buf.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === memberBytes) {
          start(buf);
          members++;
          buf = take();
          fill = 0;
          while (queue.length >= concurrency) yield* await queue.shift()!;
          // Stored members and synchronous reads never wait on the event loop: without a turn
          // now and then, a pass over incompressible data would not even see Ctrl-C (signal
          // handlers, timers and the abort signal are all event-loop callbacks).
          if (members % TURN_EVERY_MEMBERS === 0) await nextTurn();
        }
      }
      release?.(chunk);
    }
    // A stream with no member at all is not valid gzip: empty input still gets one (empty) member.
    if (fill > 0 || members === 0) start(buf.subarray(0, fill));
    while (queue.length > 0) yield* await queue.shift()!;
  } finally {
    // Members still in flight (the pass failed or was abandoned) finish before their engines close.
    await Promise.allSettled(queue);
    engines.close();
  }
}

/**
 * zlib engines kept for a whole pass and reset between members. Creating one per member
 * allocated and zeroed zlib's window and hash tables on the main thread for every MiB
 * (~0.5 ms each, and garbage for the GC); `deflateReset` keeps them. A reset engine produces
 * exactly the bytes of a fresh one, and compressed (unlike stored) deflate output does not depend
 * on how zlib's output space is cut, so which engine gets a member never shows in the bytes.
 */
class Engines {
  readonly #level: number;
  readonly #idle: zlib.Gzip[] = [];
  readonly #all = new Set<zlib.Gzip>();

  constructor(level: number) {
    this.#level = level;
  }

  /**
   * One complete compressed gzip member for `data`, as the pieces zlib wrote it in (one, or
   * several when it straddles zlib's output buffers).
   */
  async member(data: Buffer): Promise<Buffer[]> {
    const engine = this.#idle.pop() ?? this.#create();
    const parts = await deflate(engine, data);
    (engine as zlib.Gzip & zlib.ZlibReset).reset(); // deflateReset; typed only on Deflate, defined on every zlib stream
    this.#idle.push(engine);
    let at = 9; // the header's OS byte: zlib writes its build platform's code
    for (const part of parts) {
      if (at < part.byteLength) {
        part[at] = OS_UNIX;
        break;
      }
      at -= part.byteLength;
    }
    return parts;
  }

  close(): void {
    for (const engine of this.#all) engine.close();
    this.#all.clear();
    this.#idle.length = 0;
  }

  #create(): zlib.Gzip {
    // The whole member is one write: finishing on it (instead of the default Z_NO_FLUSH, then a
    // separate Z_FINISH) compresses it in one threadpool trip.
    const engine = zlib.createGzip({ level: this.#level, chunkSize: ENGINE_OUTPUT_BYTES, flush: zlib.constants.Z_FINISH });
    engine.on('error', () => {}); // reported through the write callback
    this.#all.add(engine);
    return engine;
  }
}

/** Largest stored deflate block (RFC 1951 §3.2.4: LEN is 16 bits). */
const STORED_BLOCK = 65535;

/**
 * A stored gzip member, written here rather than by zlib at level 0: zlib sizes stored blocks by
 * the output space it is given, so its bytes would depend on which engine (and which place in
 * its output buffer) a member happened to get. These depend on `data` alone: an RFC 1952 header
 * (mtime 0, no flags, OS Unix), stored blocks of 65,535 bytes, CRC-32 and length.
 */
export function storedMember(data: Buffer): Buffer[] {
  const blocks = Math.max(1, Math.ceil(data.byteLength / STORED_BLOCK));
  const parts: Buffer[] = [];
  for (let i = 0; i < blocks; i++) {
    const from = i * STORED_BLOCK;
    const len = Math.min(STORED_BLOCK, data.byteLength - from);
    const head = Buffer.allocUnsafe(i === 0 ? 15 : 5);
    if (i === 0) head.set([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, OS_UNIX]);
    const at = head.byteLength - 5;
    head[at] = i === blocks - 1 ? 1 : 0; // BFINAL; BTYPE 00 (stored)
    head.writeUInt16LE(len, at + 1);
    head.writeUInt16LE(~len & 0xffff, at + 3);
    parts.push(head, data.subarray(from, from + len));
  }
  const trailer = Buffer.allocUnsafe(8);
  trailer.writeUInt32LE(zlib.crc32(data), 0);
  trailer.writeUInt32LE(data.byteLength % 2 ** 32, 4);
  parts.push(trailer);
  return parts;
}

/** Compresses `data` as one finished member on `engine` (on the threadpool); resolves with its output. */
function deflate(engine: zlib.Gzip, data: Buffer): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const onData = (part: Buffer): void => void parts.push(part);
    engine.on('data', onData);
    engine.write(data, (err) => {
      engine.off('data', onData);
      if (err) reject(err);
      else resolve(parts);
    });
  });
}

/**
 * Shannon entropy, in bits per byte, of a sample of `data` (four 4 KiB slices spread over it; all
 * of a small member). A byte histogram costs ~20 µs a member on the main thread, where the
 * deflate of a sample it replaces cost a zlib stream and a threadpool trip (~10 % of a text
 * layer's time). A function of the bytes alone, so the store-or-compress choice is reproducible.
 */
export function sampleEntropy(data: Buffer): number {
  const counts = new Uint32Array(256);
  let n = 0;
  const take = (from: number, to: number): void => {
    for (let i = from; i < to; i++) counts[data[i]!]!++;
    n += to - from;
  };
  if (data.byteLength <= 4 * SAMPLE_SLICE) take(0, data.byteLength);
  else {
    const step = Math.floor((data.byteLength - SAMPLE_SLICE) / 3);
    for (let i = 0; i < 4; i++) take(i * step, i * step + SAMPLE_SLICE);
  }
  let bits = 0;
  for (const c of counts) {
    if (c === 0) continue;
    const p = c / n;
    bits -= p * Math.log2(p);
  }
  return bits;
}
