import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { Digest } from './types.ts';

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * A pass-through stream that hashes and counts what flows through it. The digest and size are
 * final once the stream has ended; reading them earlier throws, so a caller cannot record a
 * digest of a half-read stream.
 */
export class HashTap extends Transform {
  readonly #hash: Hash = createHash('sha256');
  #size = 0;
  #digest: Digest | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.#digest = `sha256:${this.#hash.digest('hex')}`;
    cb();
  }

  get digest(): Digest {
    if (this.#digest === undefined) throw new Error('HashTap: digest read before the stream ended');
    return this.#digest;
  }

  get size(): number {
    if (this.#digest === undefined) throw new Error('HashTap: size read before the stream ended');
    return this.#size;
  }
}
