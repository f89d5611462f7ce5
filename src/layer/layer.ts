import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BuildRequest, LayerPolicy } from '../build/request.ts';
import { AbortedError, SourceError } from '../errors.ts';
import type { Digest } from '../oci/types.ts';
import type { EntrySource } from './entry.ts';
import { parallelGzip, type GzipOptions } from './gzip.ts';
import { BufferPool } from './pool.ts';
import { packEntries, type LayerLimits } from './tar.ts';

/**
 * The version of what a layer pass makes of its entries: the tar headers (names, modes, owners,
 * PAX records, which directories are written) and how entries are read and ordered. Callers that
 * remember a layer by its inputs ({@link BuildRequest.knownLayer}) key it on this too, so a
 * release that changes those bytes builds the layer again instead of reusing one made the old
 * way. Bump it with any such change; a change of compression alone does not need it (a reused
 * blob stays valid whatever compresses the next one).
 */
// 2: owner ids 262144..2097151 (`--chown`) are PAX records; format 1 wrote them as 262143.
export const LAYER_FORMAT = 2;

/** What is known about a layer once it has been produced once. */
export interface LayerDigests {
  /** sha256 of the compressed blob (what the manifest names). */
  readonly digest: Digest;
  /** sha256 of the uncompressed tar (what the config's rootfs.diff_ids names). */
  readonly diffId: Digest;
  /** Byte length of the compressed blob. */
  readonly size: number;
}

export interface OpenedLayer {
  /** The compressed blob. Consume it (or destroy it) or `done` never settles. */
  readonly stream: Readable;
  /** Settles when `stream` has ended: the digests of exactly what it delivered. */
  readonly done: Promise<LayerDigests>;
}

/**
 * A layer built from an {@link EntrySource}, in the style of go-containerregistry's layers:
 * it can be opened any number of times (an upload retried, the digest computed before a tarball
 * is written), and every pass produces the same bytes from the same inputs. It has no media
 * type of its own: the same bytes are a Docker or an OCI layer depending on the image that
 * names them (the build writes the OCI twin of a Docker image with this very layer), so the
 * descriptor gets its type where the image is assembled.
 */
export interface Layer {
  /**
   * One pass, one read of every file: entries → tar → sha256 (diffID) → parallel gzip →
   * sha256 + byte count (digest, size) → `stream`. An error anywhere (a file that vanished, a
   * consumer that destroyed the stream, the abort signal) tears every stage down and rejects
   * `done`.
   */
  open(): OpenedLayer;
  /** Digests and size without keeping any bytes: the result of the first complete pass, else one drained pass. */
  measure(): Promise<LayerDigests>;
  /** The digests if a pass has completed, else undefined. */
  known(): LayerDigests | undefined;
}

export interface CreateLayerOptions {
  readonly signal?: AbortSignal;
  readonly gzip?: GzipOptions;
  /** Bounds on the layer's paths (see {@link LayerLimits}); none by default. */
  readonly limits?: LayerLimits;
}

/**
 * Builds the new layer. A later pass that yields different digests than an earlier one (the
 * files changed between passes) fails with a {@link SourceError}: the manifest would otherwise
 * name a blob that was never uploaded.
 */
export function createLayer(files: EntrySource, policy: LayerPolicy, opts: CreateLayerOptions = {}): Layer {
  let known: LayerDigests | undefined;

  const open = (): OpenedLayer => {
    const signal = opts.signal;
    // Two stages only: the packer's chunks go straight into the member buffers of the gzip stage,
    // which hashes each whole member for the diffID; the compressed members are hashed and counted
    // on their way out. (Stream stages in between re-buffered and copied every byte.)
    // File contents are read into pooled memory and recycled once copied into a gzip member.
    const pool = new BufferPool();
    const tar = packEntries(files(), policy, signal, pool, opts.limits);
    const diffHash = createHash('sha256');
    const blobHash = createHash('sha256');
    let size = 0;
    const gzip = {
      ...opts.gzip,
      onMember: (member: Buffer) => void diffHash.update(member),
      release: (chunk: Uint8Array) => pool.release(chunk),
    };
    const compressed = async function* (): AsyncGenerator<Buffer> {
      for await (const member of parallelGzip(tar, gzip)) {
        blobHash.update(member);
        size += member.byteLength;
        yield member;
      }
    };
    const out = new PassThrough({ readableHighWaterMark: 1024 * 1024 });
    const run = pipeline(compressed, out, signal ? { signal } : {});
    const done = run.then(
      (): LayerDigests => {
        const result: LayerDigests = { digest: `sha256:${blobHash.digest('hex')}`, diffId: `sha256:${diffHash.digest('hex')}`, size };
        if (known && (known.digest !== result.digest || known.diffId !== result.diffId)) {
          throw new SourceError(
            'layer',
            `files changed while the image was being built: this pass produced ${result.diffId}, an earlier one ${known.diffId}`,
          );
        }
        known = result;
        return result;
      },
      (err: unknown) => {
        if (signal?.aborted && !(err instanceof AbortedError)) {
          throw new AbortedError('layer build aborted', { cause: signal.reason });
        }
        throw err;
      },
    );
    done.catch(() => {}); // the caller may only watch `stream`; its error is reported there too
    return { stream: out, done };
  };

  const measure = async (): Promise<LayerDigests> => {
    if (known) return known;
    const { stream, done } = open();
    stream.resume();
    return done;
  };

  return { open, measure, known: () => known };
}

/**
 * A layer that is only its digests: one already in the registry, taken as it is
 * ({@link BuildRequest.knownLayer}). It has no bytes to open; builds that need them read the files.
 */
export function reusedLayer(digests: LayerDigests): Layer {
  return {
    open: () => {
      throw new Error(`layer ${digests.digest} is reused from the registry; its bytes are not here`);
    },
    measure: async () => digests,
    known: () => digests,
  };
}
