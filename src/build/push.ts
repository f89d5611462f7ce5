import { PassThrough, pipeline, type Readable } from 'node:stream';
import { withContext } from '../errors.ts';
import type { Logger, ProgressEvent } from '../log.ts';
import type { Descriptor } from '../oci/types.ts';
import { repositoryName } from '../reference/reference.ts';
import type { MeasuredStream, Registry, Repository, UploadedBlob, UploadReservation } from '../registry/types.ts';

/** Where a blob's bytes can be had when the target registry does not have it yet. */
export type BlobOrigin =
  | { readonly kind: 'registry'; readonly repo: Repository }
  | {
      readonly kind: 'bytes';
      readonly bytes: Uint8Array;
      /** An upload session opened for these bytes before they were known (see `Registry.reserveUpload`). */
      readonly reserved?: UploadReservation;
    };

/** At most `limit` tasks run at once; the rest wait in order. */
export class Limiter {
  readonly #limit: number;
  #running = 0;
  readonly #queue: Array<() => void> = [];

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#limit) await new Promise<void>((resolve) => this.#queue.push(resolve));
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#queue.shift()?.();
    }
  }
}

/**
 * A stream that starts fetching only when a consumer opens it, so a blob copy can be handed to
 * the registry client as a replayable body: every retry opens a fresh GET. A stream closed
 * before its fetch has answered (the client discards the body of an upload whose session could
 * not be opened) aborts the fetch: its GET, and the retries of it, do not outlive the upload.
 */
function lazyStream(fetch: (signal: AbortSignal) => Promise<Readable>, signal: AbortSignal | undefined): Readable {
  const out = new PassThrough();
  const stop = new AbortController();
  let fetched = false;
  out.once('close', () => {
    if (!fetched) stop.abort(new Error('blob copy discarded before its download answered'));
  });
  fetch(signal ? AbortSignal.any([signal, stop.signal]) : stop.signal).then(
    (src) => {
      fetched = true;
      pipeline(src, out, () => {});
    },
    (err: unknown) => out.destroy(err as Error),
  );
  return out;
}

/**
 * Puts blobs into target repositories: HEAD first, then a cross-repository mount when the
 * blob's origin is on the same registry, else an upload (base blobs streamed registry to
 * registry, never through disk); blobs given as bytes are uploaded at once. Uploads are bounded
 * by one {@link Limiter}; the same blob asked for twice in the same repository is transferred
 * once, and a failed transfer is forgotten so a later call can try again.
 */
export class BlobPusher {
  readonly #registry: Registry;
  readonly #limiter: Limiter;
  readonly #inflight = new Map<string, Promise<void>>();
  readonly #logger: Logger;
  readonly #onProgress: ((e: ProgressEvent) => void) | undefined;
  readonly #signal: AbortSignal | undefined;

  constructor(
    registry: Registry,
    opts: { concurrency: number; logger: Logger; onProgress?: (e: ProgressEvent) => void; signal?: AbortSignal },
  ) {
    this.#registry = registry;
    this.#limiter = new Limiter(opts.concurrency);
    this.#logger = opts.logger;
    this.#onProgress = opts.onProgress;
    this.#signal = opts.signal;
  }

  /** Makes sure `target` has the blob `desc`, taking it from `origin` when it has not. */
  ensure(target: Repository, desc: Descriptor, origin: BlobOrigin): Promise<void> {
    const key = `${repositoryName(target)}@${desc.digest}`;
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#limiter.run(() => this.#transfer(target, desc, origin));
      this.#inflight.set(key, p);
      p.catch(() => this.#inflight.delete(key));
    }
    return p;
  }

  /** Uploads a blob whose digest is known only once its stream has been consumed (a new layer). */
  uploadStream(target: Repository, open: () => Readable | MeasuredStream, what: string): Promise<UploadedBlob> {
    return this.#limiter.run(async () => {
      try {
        const blob = await this.#registry.uploadBlob(target, { open, replayable: true }, this.#signal);
        this.#inflight.set(`${repositoryName(target)}@${blob.digest}`, Promise.resolve());
        this.#onProgress?.({ kind: 'upload', digest: blob.digest, bytes: blob.size, total: blob.size, done: true });
        this.#logger.debug('uploaded', { what, repository: repositoryName(target), digest: blob.digest, size: blob.size });
        return blob;
      } catch (err) {
        throw withContext(err, `pushing ${what} to ${repositoryName(target)}`);
      }
    });
  }

  async #transfer(target: Repository, desc: Descriptor, origin: BlobOrigin): Promise<void> {
    const signal = this.#signal;
    const where = `${desc.digest} to ${repositoryName(target)}`;
    try {
      // Bytes held in memory (an image config, a few KiB) are uploaded without asking first:
      // that costs two requests (POST, PUT) whether or not the registry has them, where a HEAD
      // first costs one when it has them and three when not, and a new config is the usual case.
      if (origin.kind === 'registry' && (await this.#registry.hasBlob(target, desc.digest, signal))) {
        this.#onProgress?.({ kind: 'skip', digest: desc.digest, bytes: desc.size, total: desc.size, done: true });
        this.#logger.debug('blob exists', { repository: repositoryName(target), digest: desc.digest });
        return;
      }
      // A declined mount may come with an upload session (202 Accepted): the copy goes into it.
      let session: string | undefined;
      if (origin.kind === 'registry' && origin.repo.registry === target.registry && origin.repo.repository !== target.repository) {
        const mount = await this.#registry.mountBlob(target, desc.digest, origin.repo, signal);
        if (mount.mounted) {
          this.#onProgress?.({ kind: 'mount', digest: desc.digest, bytes: desc.size, total: desc.size, done: true });
          this.#logger.debug('blob mounted', { repository: repositoryName(target), digest: desc.digest, from: repositoryName(origin.repo) });
          return;
        }
        session = mount.session;
      }
      let uploaded: UploadedBlob;
      if (origin.kind === 'bytes') {
        uploaded = origin.reserved
          ? await origin.reserved.upload(origin.bytes, signal)
          : await this.#registry.uploadBlob(target, { bytes: origin.bytes, digest: desc.digest }, signal);
      } else {
        const from = origin.repo;
        const open = (): Readable => lazyStream(async (fetchSignal) => (await this.#registry.getBlob(from, desc.digest, fetchSignal)).stream, signal);
        uploaded = await this.#registry.uploadBlob(target, { open, digest: desc.digest, size: desc.size, replayable: true }, signal, session);
        this.#logger.debug('blob copied', { repository: repositoryName(target), digest: desc.digest, from: repositoryName(from) });
      }
      this.#onProgress?.({ kind: origin.kind === 'bytes' ? 'upload' : 'copy', digest: uploaded.digest, bytes: uploaded.size, total: desc.size, done: true });
    } catch (err) {
      throw withContext(err, `pushing blob ${where}`);
    }
  }
}
