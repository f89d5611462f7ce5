import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { GZIP_MEMBER_BYTES, parallelGzip, sampleEntropy, STORE_ENTROPY, storedMember, type GzipOptions } from '../../src/layer/gzip.ts';

async function gz(chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, opts?: GzipOptions): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of parallelGzip(chunks as AsyncIterable<Uint8Array>, opts)) out.push(b);
  return Buffer.concat(out);
}

function* split(data: Buffer, sizes: readonly number[]): Iterable<Buffer> {
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(off, off + n);
    off += n;
  }
}

/** Text-like data, several members long, compressible but not trivially. */
function text(bytes: number): Buffer {
  const words = readFileSync(new URL(import.meta.url)).toString().split(/\s+/);
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const w = words[(i * 7919) % words.length]!;
    parts.push(w);
    n += w.length + 1;
  }
  return Buffer.from(parts.join(' ')).subarray(0, bytes);
}

/**
 * The 10-byte headers of the gzip members, found by their magic (1f 8b 08). Compressed data could
 * contain the magic by chance; the input here is fixed, so the count is stable.
 */
function members(data: Buffer): Buffer[] {
  const starts: number[] = [];
  for (let i = data.indexOf(Buffer.from([0x1f, 0x8b, 0x08])); i >= 0; i = data.indexOf(Buffer.from([0x1f, 0x8b, 0x08]), i + 1)) starts.push(i);
  return starts.map((s) => data.subarray(s, s + 10));
}

describe('parallelGzip', () => {
  const input = text(3 * GZIP_MEMBER_BYTES + 12_345);

  it('decompresses (zlib and GNU gzip) to exactly the input', async () => {
    const out = await gz(split(input, [65536]));
    assert.ok(gunzipSync(out).equals(input), 'zlib gunzip');
    assert.ok(execFileSync('gzip', ['-dc'], { input: out, maxBuffer: 64 << 20 }).equals(input), 'gzip -dc');
    execFileSync('gzip', ['-t'], { input: out });
    assert.ok(out.length < input.length / 2, `compressed ${input.length} → ${out.length}`);
  });

  it('gives identical bytes however the input is chunked and whatever the concurrency', async () => {
    const a = await gz(split(input, [65536]));
    const b = await gz(split(input, [1, 511, 100_000, 3 * 1024 * 1024]), { concurrency: 1 });
    const c = await gz([input], { concurrency: 3 });
    assert.ok(a.equals(b));
    assert.ok(a.equals(c));
  });

  it('writes one member per MiB with mtime 0 and a fixed OS byte', async () => {
    const out = await gz([input]);
    const headers = members(out);
    assert.equal(headers.length, 4);
    for (const h of headers) {
      assert.deepEqual([...h.subarray(4, 8)], [0, 0, 0, 0], 'mtime 0');
      assert.equal(h[9], 3, 'OS = Unix');
    }
  });

  it('compresses each member exactly as a fresh zlib stream would: reused engines leave no trace', async () => {
    const out = await gz([input], { concurrency: 2 });
    const expected = [];
    for (let at = 0; at < input.length; at += GZIP_MEMBER_BYTES) {
      const member = gzipSync(input.subarray(at, at + GZIP_MEMBER_BYTES), { level: 1 });
      member[9] = 3;
      expected.push(member);
    }
    assert.ok(out.equals(Buffer.concat(expected)));
  });

  it('stores incompressible data instead of inflating it much', async () => {
    const random = randomBytes(2 * GZIP_MEMBER_BYTES + 5000);
    const out = await gz(split(random, [65536]));
    assert.ok(gunzipSync(out).equals(random));
    // Stored deflate costs 5 bytes per 64 KiB block plus 18 per member: well under 0.1 %.
    assert.ok(out.length <= random.length * 1.001, `${random.length} → ${out.length}`);
    assert.ok(out.length > random.length, 'stored, so a little larger');
  });

  it('gives identical bytes for a mixed stream whichever engine gets which member', async () => {
    // Stored and compressed members interleaved: engines are reused across members in an order
    // that depends on timing, which must never show in the output.
    const parts: Buffer[] = [];
    for (let i = 0; i < 6; i++) parts.push(i % 2 ? randomBytes(GZIP_MEMBER_BYTES) : text(GZIP_MEMBER_BYTES));
    const mixed = Buffer.concat(parts);
    const outs = await Promise.all([1, 2, 4].map((concurrency) => gz(split(mixed, [70_000]), { concurrency })));
    assert.ok(gunzipSync(outs[0]!).equals(mixed));
    assert.ok(outs[1]!.equals(outs[0]!) && outs[2]!.equals(outs[0]!));
  });

  it('compresses the compressible members of a mixed stream', async () => {
    const mixed = Buffer.concat([randomBytes(GZIP_MEMBER_BYTES), Buffer.alloc(GZIP_MEMBER_BYTES, 'a')]);
    const out = await gz([mixed]);
    assert.ok(gunzipSync(out).equals(mixed));
    assert.ok(out.length < GZIP_MEMBER_BYTES * 1.01, `${out.length}`);
  });

  it('lets the event loop turn during a pass over incompressible data (so Ctrl-C is seen)', async () => {
    const random = randomBytes(GZIP_MEMBER_BYTES);
    const members = 32;
    let produced = 0;
    let producedWhenTurned: number | undefined;
    setImmediate(() => (producedWhenTurned = produced));
    // Synchronously available input, as local reads are: nothing here waits on the event loop.
    async function* input(): AsyncIterable<Buffer> {
      for (let i = 0; i < members; i++) yield random;
    }
    for await (const part of parallelGzip(input())) produced += part.byteLength;
    assert.ok(produced > members * GZIP_MEMBER_BYTES, 'stored, not compressed');
    assert.ok(producedWhenTurned !== undefined && producedWhenTurned < produced, `the loop turned after ${producedWhenTurned} of ${produced} bytes`);
  });

  it('input of whole members gets exactly those members, no empty one after them', async () => {
    const whole = input.subarray(0, 2 * GZIP_MEMBER_BYTES);
    const expected = [0, 1].map((i) => {
      const member = gzipSync(whole.subarray(i * GZIP_MEMBER_BYTES, (i + 1) * GZIP_MEMBER_BYTES), { level: 1 });
      member[9] = 3;
      return member;
    });
    assert.ok((await gz(split(whole, [65536]))).equals(Buffer.concat(expected)));
  });

  it('emits a valid gzip stream for empty input', async () => {
    const out = await gz([]);
    assert.equal(gunzipSync(out).length, 0);
    execFileSync('gzip', ['-t'], { input: out });
  });

  it('propagates a source error', async () => {
    async function* failing(): AsyncIterable<Uint8Array> {
      yield input.subarray(0, 3 * GZIP_MEMBER_BYTES);
      throw new Error('source broke');
    }
    await assert.rejects(gz(failing()), /source broke/);
  });

  it('rejects a bad level', async () => {
    await assert.rejects(gz([input], { level: 0 }), RangeError);
  });
});

describe('sampleEntropy decides what is stored', () => {
  it('random bytes are near 8 bits a byte; text and zeros far below the store threshold', async () => {
    assert.ok(sampleEntropy(randomBytes(1 << 20)) > 7.95);
    const text = Buffer.from('2026-11-28T07:00:00Z INFO request served path=/api/v1/items status=200 ms=12\n'.repeat(20000));
    assert.ok(sampleEntropy(text) < 5.5);
    assert.equal(sampleEntropy(Buffer.alloc(1 << 20)), 0);
    assert.ok(sampleEntropy(randomBytes(1 << 20)) > STORE_ENTROPY && sampleEntropy(text) < STORE_ENTROPY);
  });
});

describe('storedMember', () => {
  it('is a valid gzip member of 65,535-byte stored blocks with mtime 0 and OS Unix', () => {
    const data = randomBytes(200_000);
    const member = Buffer.concat(storedMember(data));
    assert.equal(member.length, 10 + 4 * 5 + data.length + 8);
    assert.deepEqual([...member.subarray(0, 10)], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    assert.ok(gunzipSync(member).equals(data));
    assert.ok(execFileSync('gzip', ['-dc'], { input: member }).equals(data));
  });

  it('encodes empty input as one empty final block', () => {
    const member = Buffer.concat(storedMember(Buffer.alloc(0)));
    assert.equal(member.length, 10 + 5 + 8);
    assert.equal(gunzipSync(member).length, 0);
    execFileSync('gzip', ['-t'], { input: member });
  });
});
