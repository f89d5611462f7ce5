/**
 * A registry client on undici implementing {@link Registry}: the OCI distribution API
 * (https://github.com/opencontainers/distribution-spec/blob/main/spec.md) with docker's auth,
 * one retry policy, digest verification of everything read or written, and errors that say
 * what was being done.
 */
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream';
import { createHash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { request } from './http.ts';
import {
  AbortedError,
  ArtificerError,
  BlobStorageError,
  DeniedError,
  DigestMismatchError,
  ManifestUnknownError,
  NetworkError,
  RegistryError,
  UnauthorizedError,
  UnsupportedError,
  redactUrl,
  registryErrorSummary,
  withContext,
  type RegistryErrorDetails,
} from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { HashTap, isDigest, sha256 } from '../oci/digest.ts';
import { repositoryName } from '../reference/reference.ts';
import { MediaTypes, type Digest, type ImageIndex, type ImageManifest } from '../oci/types.ts';
import { ANONYMOUS_SOURCE, Authenticator, defaultLookup, describe, type Lookup } from './auth.ts';
import { readBounded, readPrefix } from './body.ts';
import { challengeScopes, parseWwwAuthenticate } from './challenge.ts';
import { anonymous } from './credentials.ts';
import { endpointFor, isInsecure, type Endpoint } from './endpoint.ts';
import { isRetryable, retryPolicy, setRetryAfter, parseRetryAfter, withRetry, type RetryPolicy } from './retry.ts';
import type { BlobBody, CredentialProvider, FetchedManifest, MountResult, Registry, Repository, UploadedBlob, UploadReservation } from './types.ts';

/** An artificer error (other than a network one) in `err` or its causes: what a request body's stream failed with. */
function bodyError(err: unknown): ArtificerError | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof ArtificerError && !(e instanceof NetworkError)) return e;
  }
  return undefined;
}

/** What `getManifest` accepts. Without it distribution answers 404 or a schema1 manifest. */
export const MANIFEST_ACCEPT = [MediaTypes.ociManifest, MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.dockerManifestList].join(', ');

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024; // distribution's own limit
/** Most bytes {@link RegistryClient.getBlobBytes} holds in memory (it reads image configs, which are KiBs). */
const MAX_BLOB_BYTES_IN_MEMORY = 16 * 1024 * 1024;

const MAX_ERROR_BODY = 64 * 1024;
const MAX_REDIRECTS = 5;

export interface RegistryClientOptions {
  credentials?: CredentialProvider;
  retry?: Partial<RetryPolicy>;
  /** host[:port] spoken to over plain http (loopback hosts always are). */
  insecureRegistries?: readonly string[];
  logger?: Logger;
  userAgent?: string;
  dispatcher?: Dispatcher;
  /**
   * Let a registry addressed by name redirect (blob downloads, upload Locations, token realms) to
   * the private network its name resolves to: on-prem Harbor or distribution with MinIO/S3 on
   * the LAN (see `mayFollow`). Off by default: the name is resolved here, apart from the lookup
   * the connection makes, so a registry whose DNS answers each differently (rebinding) could
   * point requests into the network the client runs in. The CLI, whose user names the
   * registries, turns it on; the Cloud Function, which builds on bases any spec names, does not.
   *
   * The name is resolved only when the registry first sends us to a private address, once per
   * registry for the client's life, waiting at most `REGISTRY_LOOKUP_TIMEOUT_MS` (a failed or
   * slow lookup judges the registry public: the target is refused). That the registry's answer
   * decides when we resolve gives a hostile one nothing rebinding did not: its DNS could answer
   * each query differently anyway, which is why the option stays off where bases are untrusted.
   */
  privateRedirects?: boolean;
  /**
   * Resolves a registry's host name for `privateRedirects`. node:dns by default; give the one
   * the dispatcher connects with when it has its own.
   */
  lookup?: Lookup;
}

type Body = Buffer | Uint8Array | Readable | undefined;

interface Call {
  readonly repo: Repository;
  readonly scopes: readonly string[];
  /** For 401/403 messages: "pull library/ubuntu", "push team/app". */
  readonly action: string;
  readonly method: string;
  /** A path ("/v2/…") on the registry, or an absolute URL (an upload Location). */
  readonly target: string;
  readonly headers?: Record<string, string>;
  readonly body?: Body;
  /**
   * Follow 3xx (manifest and blob downloads), dropping Authorization when the origin changes;
   * a redirect target on another origin answering 401 with a Bearer challenge gets one anonymous
   * token of its own. Only for requests without a body.
   */
  readonly followRedirects?: boolean;
  /**
   * Follow an https → http hop only to an insecure registry (or loopback): for a manifest,
   * whose bytes fetched by tag no digest protects, such a hop is a TLS downgrade. Blob
   * downloads go without it: their digest is verified.
   */
  readonly noDowngrade?: boolean;
  readonly signal?: AbortSignal | undefined;
}

interface Sent {
  readonly res: Dispatcher.ResponseData;
  readonly url: string;
  readonly source: string;
}

const pullScope = (r: Repository): string => `repository:${r.repository}:pull`;
const pushScope = (r: Repository): string => `repository:${r.repository}:pull,push`;
/**
 * How long cancelling an upload session may take ({@link RegistryClient} `#cancelUpload`): it is
 * best effort, and it runs on a path that is failing already (wrong content, a failed PUT, an
 * abort, an unused reservation), which must not wait on a registry that stops answering for
 * undici's 300 s. Exported for tests; not part of the package's API.
 */
export const CANCEL_TIMEOUT_MS = 5000;

/**
 * An upload's body, opened: what to send, with what headers, and what it turned out to be once
 * sent (digest and size). Bytes come with their verified digest; a plain stream is hashed on the
 * way; a measured stream (a new layer) reports its own.
 */
interface PreparedBody {
  readonly content: Buffer | Readable;
  readonly sent: () => Promise<UploadedBlob>;
  readonly headers: Record<string, string>;
  /** Stops a body that will not be sent, at once: a layer's pass or a blob's download ends instead of waiting to be read. */
  readonly discard: () => void;
}

function requestBody(body: BlobBody): PreparedBody {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
  if ('bytes' in body) {
    const buf = Buffer.from(body.bytes.buffer, body.bytes.byteOffset, body.bytes.byteLength);
    const known = { digest: body.digest ?? sha256(buf), size: buf.length };
    headers['content-length'] = String(buf.length);
    return { content: buf, sent: async () => known, headers, discard: () => {} };
  }
  if (body.size !== undefined) headers['content-length'] = String(body.size);
  const opened = body.open();
  if (opened instanceof Readable) {
    const tap = new HashTap();
    const discard = (): void => {
      tap.destroy();
      opened.destroy();
    };
    return { content: pipeline(opened, tap, () => {}), sent: async () => ({ digest: tap.digest, size: tap.size }), headers, discard };
  }
  return { content: opened.stream, sent: () => opened.measured, headers, discard: () => opened.stream.destroy() };
}

function header(res: Dispatcher.ResponseData, key: string): string | undefined {
  const v = res.headers[key];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * A 401 whose challenge says `error="insufficient_scope"` (RFC 6750 §3.1): the token is valid
 * but lacks an action the request needs. Token servers grant fewer actions than asked and say so
 * only inside the JWT (Docker Hub and distribution give an account without push a pull-only
 * token), so for a credential the token server accepted this is a refusal, not a credential to
 * fix. Anonymous, it stays unauthorized: logging in may help.
 */
function insufficientScope(res: Dispatcher.ResponseData): boolean {
  return parseWwwAuthenticate(res.headers['www-authenticate']).some((c) => c.scheme === 'bearer' && c.params.error === 'insufficient_scope');
}

/** Content that is not what its digest says: blamed on the content, not on the registry. */
function contentMismatch(repo: Repository, expected: Digest, actual: Digest): DigestMismatchError {
  return new DigestMismatchError(`blob to push to ${repositoryName(repo)}`, expected, actual, 'content');
}

function manifestRefString(repo: Repository, reference: string): string {
  return `${repositoryName(repo)}${isDigest(reference) ? '@' : ':'}${reference}`;
}

/** A pass-through that fails at the end when the bytes do not hash to `expected`. */
class VerifyingStream extends Transform {
  readonly #hash = createHash('sha256');
  readonly #expected: Digest;
  readonly #what: string;
  constructor(expected: Digest, what: string) {
    super();
    this.#expected = expected;
    this.#what = what;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    const actual = `sha256:${this.#hash.digest('hex')}`;
    cb(actual === this.#expected ? null : new DigestMismatchError(this.#what, this.#expected, actual));
  }
}

export class RegistryClient implements Registry {
  readonly #policy: RetryPolicy;
  readonly #insecure: readonly string[];
  readonly #logger: Logger;
  readonly #userAgent: string;
  readonly #dispatcher: Dispatcher | undefined;
  readonly #auth: Authenticator;
  /**
   * Mounts the token server refused outright, as "target\nsource" repository pairs: every later
   * blob from the same source would repeat the refused token request, and the credential
   * resolution (a credential helper run) that follows a refusal, only to upload anyway.
   * Remembered for the client's life.
   */
  readonly #mountRefused = new Set<string>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#policy = retryPolicy(opts.retry);
    this.#insecure = opts.insecureRegistries ?? [];
    this.#logger = opts.logger ?? silentLogger;
    this.#userAgent = opts.userAgent ?? 'artificer/0.1';
    this.#dispatcher = opts.dispatcher;
    this.#auth = new Authenticator({
      credentials: opts.credentials ?? anonymous,
      insecureRegistries: this.#insecure,
      logger: this.#logger,
      userAgent: this.#userAgent,
      dispatcher: this.#dispatcher,
      ...(opts.privateRedirects ? { lookup: opts.lookup ?? defaultLookup } : {}),
    });
  }

  /** Number of token requests made so far (tests assert caching with it). */
  get tokenRequests(): number {
    return this.#auth.tokenRequests;
  }

  endpoint(registry: string): Endpoint {
    return endpointFor(registry, this.#insecure);
  }

  async getManifest(repo: Repository, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const ref = manifestRefString(repo, reference);
    return this.#step(`fetching manifest ${ref}`, true, signal, async () => {
      // Redirects followed: registry.k8s.io sends every manifest request to a regional Artifact
      // Registry (kubernetes/registry.k8s.io cmd/archeio/docs/request-handling.md), and the
      // distribution spec allows a redirect on any request.
      const { res, url, source } = await this.#send({
        repo, scopes: [pullScope(repo)], action: `pull ${repo.repository}`, method: 'GET',
        target: `/v2/${repo.repository}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, followRedirects: true, noDowngrade: true, signal,
      });
      if (res.statusCode === 404) {
        await res.body.dump();
        throw new ManifestUnknownError(ref);
      }
      if (res.statusCode !== 200) throw await this.#error(res, 'GET', url, repo, `pull ${repo.repository}`, source, { notFound: () => new ManifestUnknownError(ref), elsewhere: 'registry' });
      const bytes = await readBounded(res.body, MAX_MANIFEST_BYTES, () => new UnsupportedError(`manifest ${ref} is larger than ${MAX_MANIFEST_BYTES} bytes`));
      const digest = sha256(bytes);
      if (isDigest(reference) && digest !== reference) throw new DigestMismatchError(`manifest ${ref}`, reference, digest);
      const claimed = header(res, 'docker-content-digest');
      if (claimed && isDigest(claimed) && claimed !== digest) throw new DigestMismatchError(`manifest ${ref}`, claimed, digest);
      let parsed: (ImageManifest | ImageIndex) & { mediaType?: string };
      try {
        parsed = JSON.parse(bytes.toString('utf8')) as typeof parsed;
      } catch {
        throw new RegistryError(`manifest ${ref} is not valid JSON`, { method: 'GET', url, status: res.statusCode });
      }
      const contentType = header(res, 'content-type')?.split(';')[0]?.trim();
      const mediaType =
        parsed.mediaType ??
        (contentType && contentType !== 'application/json' && contentType !== 'application/octet-stream' ? contentType : undefined) ??
        ('manifests' in parsed ? MediaTypes.ociIndex : MediaTypes.ociManifest);
      if ((parsed as { schemaVersion?: unknown }).schemaVersion === 1 || mediaType === MediaTypes.dockerManifestV1 || mediaType === MediaTypes.dockerManifestV1Signed) {
        throw new UnsupportedError(`image ${ref} uses the deprecated Docker schema 1 manifest format; push it again with a current docker or crane`);
      }
      return { mediaType, digest, bytes, manifest: parsed };
    });
  }

  async hasBlob(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<boolean> {
    return this.#step(`checking blob ${digest} in ${repositoryName(repo)}`, true, signal, async () => {
      const { res, url, source } = await this.#send({
        repo, scopes: [pullScope(repo)], action: `pull ${repo.repository}`, method: 'HEAD',
        target: `/v2/${repo.repository}/blobs/${digest}`, followRedirects: true, signal,
      });
      if (res.statusCode === 200) {
        await res.body.dump();
        return true;
      }
      if (res.statusCode === 404) {
        await res.body.dump();
        return false;
      }
      throw await this.#error(res, 'HEAD', url, repo, `pull ${repo.repository}`, source);
    });
  }

  async getBlob(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<{ stream: Readable; size: number }> {
    return this.#step(`fetching blob ${digest} from ${repositoryName(repo)}`, true, signal, async () => {
      const res = await this.#blobResponse(repo, digest, signal);
      const size = Number(header(res, 'content-length') ?? -1);
      const verify = new VerifyingStream(digest, `blob ${digest} from ${repositoryName(repo)}`);
      // Not pipeline(): it would end `verify` with the body's raw socket error, which a consumer
      // (an upload copying this blob elsewhere) then reported as its own request failing.
      res.body.on('error', (err) => verify.destroy(new NetworkError(`reading blob ${digest} from ${repositoryName(repo)}: ${describe(err)}`, { cause: err })));
      verify.once('close', () => res.body.destroy()); // read to the end, or given up by the consumer
      return { stream: res.body.pipe(verify), size };
    });
  }

  async getBlobBytes(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<Buffer> {
    // Read inside the step, so a body cut off half-way is retried like a failed request.
    return this.#step(`fetching blob ${digest} from ${repositoryName(repo)}`, true, signal, async () => {
      const res = await this.#blobResponse(repo, digest, signal);
      const bytes = await readBounded(res.body, MAX_BLOB_BYTES_IN_MEMORY, () => new UnsupportedError(`blob ${digest} in ${repositoryName(repo)} is larger than ${MAX_BLOB_BYTES_IN_MEMORY} bytes, too large for an image config`));
      const actual = sha256(bytes);
      if (actual !== digest) throw new DigestMismatchError(`blob ${digest} from ${repositoryName(repo)}`, digest, actual);
      return bytes;
    });
  }

  /** GET a blob (following redirects to blob storage); anything but 200 becomes the matching error. */
  async #blobResponse(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const { res, url, source } = await this.#send({
      repo, scopes: [pullScope(repo)], action: `pull ${repo.repository}`, method: 'GET',
      target: `/v2/${repo.repository}/blobs/${digest}`, followRedirects: true, signal,
    });
    if (res.statusCode !== 200) throw await this.#error(res, 'GET', url, repo, `pull ${repo.repository}`, source);
    return res;
  }

  async mountBlob(repo: Repository, digest: Digest, from: Repository, signal?: AbortSignal): Promise<MountResult> {
    if (from.registry !== repo.registry) return { mounted: false };
    const pair = `${repositoryName(repo)}\n${from.repository}`;
    if (this.#mountRefused.has(pair)) return { mounted: false };
    return this.#step(`mounting blob ${digest} from ${from.repository} into ${repositoryName(repo)}`, true, signal, async () => {
      let sent: Sent;
      try {
        sent = await this.#send({
          repo, scopes: [pushScope(repo), pullScope(from)], action: `push ${repo.repository}`, method: 'POST',
          target: `/v2/${repo.repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from.repository)}`,
          headers: { 'content-length': '0' }, signal,
        });
      } catch (err) {
        // A token server may refuse the whole combined request (push on the target plus pull on
        // the source) instead of granting fewer scopes: like a refused mount, not a failed push.
        // The upload that follows asks for the target's scopes alone and, if those are refused
        // too, reports that (go-containerregistry PRs #1406, #1681 fall back the same way).
        if (!(err instanceof UnauthorizedError || err instanceof DeniedError)) throw err;
        this.#mountRefused.add(pair);
        this.#logger.debug('mount not authorized, falling back to upload (no more mounts from there)', { digest, from: repositoryName(from), to: repositoryName(repo), error: describe(err) });
        return { mounted: false };
      }
      const { res, url, source } = sent;
      if (res.statusCode === 201) {
        await res.body.dump();
        return { mounted: true };
      }
      if (res.statusCode === 202) {
        // Declined, with an ordinary upload session opened instead (ECR does this unless a
        // manifest in the source references the blob, aws/containers-roadmap#2860): handed to
        // the upload that follows, as ggcr's remote.write does, instead of a DELETE and a POST.
        await res.body.dump();
        return header(res, 'location') ? { mounted: false, session: this.#location(res, url) } : { mounted: false };
      }
      if (res.statusCode === 401 || res.statusCode === 403) {
        // Typically no pull right on the source repository; an ordinary upload may still work
        // and, if it does not, reports the real problem.
        await res.body.dump();
        this.#logger.debug('mount refused, falling back to upload', { digest, from: repositoryName(from), to: repositoryName(repo), status: res.statusCode });
        return { mounted: false };
      }
      throw await this.#error(res, 'POST', url, repo, `push ${repo.repository}`, source);
    });
  }

  /**
   * Cancels an upload session that will not be committed (DELETE its Location), so it does not
   * stay open on the registry until it expires. One rule for every caller, kept here so no call
   * site can get it wrong:
   *
   * - best effort: never rejects, so the error that made the upload fail is the one reported;
   *   a failure or a refusal is logged at debug (the URL redacted) and otherwise ignored;
   * - not under the build's signal: an abort may be what failed the upload, and the session is
   *   still worth cancelling;
   * - bounded by {@link CANCEL_TIMEOUT_MS} instead (token fetch included), so a registry that
   *   stops answering cannot hold a failed build, or Ctrl-C, for undici's 300 s;
   * - one attempt, never retried (only re-authenticated once, as every request is): a session
   *   left open expires on its own.
   */
  async #cancelUpload(repo: Repository, location: string): Promise<void> {
    const started = Date.now();
    try {
      const { res, url } = await this.#send({
        repo, scopes: [pushScope(repo)], action: `push ${repo.repository}`, method: 'DELETE', target: location,
        signal: AbortSignal.timeout(CANCEL_TIMEOUT_MS),
      });
      await res.body.dump();
      if (res.statusCode < 200 || res.statusCode >= 300) {
        this.#logger.debug('registry did not cancel the upload session (ignored)', { url: this.#shown(repo, url), status: res.statusCode });
      }
    } catch (err) {
      this.#logger.debug('cancelling an upload session failed (ignored)', { url: this.#shown(repo, location), error: describe(err), ms: Date.now() - started });
    }
  }

  /** `url` fit for a log line; never throws (it runs where another error is being reported). */
  #shown(repo: Repository, url: string): string {
    try {
      return redactUrl(url, this.endpoint(repo.registry).origin);
    } catch {
      return redactUrl(url);
    }
  }

  /**
   * Uploads in one request, as Artifact Registry requires (it does not support chunked
   * uploads). A body whose digest is known up front (a config, a base blob copied from another
   * registry) goes as the distribution spec's monolithic upload: POST to open a session, one
   * PUT `?digest=` carrying the body. A stream whose digest is known only once it has been sent
   * (a new layer) goes as ggcr sends streamed layers: POST, PATCH with the whole body, PUT
   * `?digest=` with none. Either way the body is hashed on the way, so wrong content is named
   * as such, and the registry checks the digest before it commits.
   *
   * The body is opened while the session is: a new layer's pass starts reading and compressing,
   * and a copied blob's download starts, during the POST (and the ping and token fetch before
   * it) instead of after it; until the PATCH or PUT reads it, the stream's own backpressure
   * bounds what it makes. A body that will not be sent is stopped.
   *
   * A replayable body is retried as a whole (a failed PATCH or PUT needs a fresh session). For a
   * single-pass stream the POST and the bodiless PUT are retried like any step, only the request
   * that consumes the stream runs once.
   *
   * `opened`, a session the registry opened already (a declined mount's), takes the place of the
   * first POST; see {@link Registry.uploadBlob}.
   */
  async uploadBlob(repo: Repository, body: BlobBody, signal?: AbortSignal, opened?: string): Promise<UploadedBlob> {
    const what = `pushing ${body.digest ? `blob ${body.digest}` : 'blob'} to ${repositoryName(repo)}`;
    let content = body;
    if ('bytes' in body) {
      // Known before any request: a wrong digest opens no upload session.
      const actual = sha256(body.bytes);
      if (body.digest && body.digest !== actual) {
        throw withContext(contentMismatch(repo, body.digest, actual), what);
      }
      content = { bytes: body.bytes, digest: actual };
    }
    if ('bytes' in content || content.replayable) {
      const replayable = content;
      if (opened !== undefined) {
        const done = await this.#uploadIntoOpened(repo, replayable, opened, what, signal);
        if (done) return done;
      }
      return this.#step(what, true, signal, async () => {
        const prepared = requestBody(replayable);
        const session = await this.#openUpload(repo, signal).catch((err: unknown) => {
          prepared.discard();
          throw err;
        });
        return this.#uploadInto(repo, replayable, prepared, session, signal);
      });
    }
    const prepared = requestBody(body);
    const session = opened ?? await this.#step(what, true, signal, () => this.#openUpload(repo, signal)).catch((err: unknown) => {
      prepared.discard();
      throw err;
    });
    const sent = await this.#step(what, false, signal, () => this.#sendContent(repo, prepared, body.digest, session, signal));
    return this.#step(what, true, signal, () => this.#commitUpload(repo, sent.location, sent.blob, undefined, signal));
  }

  /** Sends `content` into the open `session` and commits it: one PUT when its digest is known, else PATCH then PUT. */
  async #uploadInto(repo: Repository, content: BlobBody, prepared: PreparedBody, session: string, signal?: AbortSignal): Promise<UploadedBlob> {
    if (content.digest) {
      const size = 'bytes' in content ? content.bytes.byteLength : (content.size ?? 0);
      return this.#commitUpload(repo, session, { digest: content.digest, size }, prepared, signal);
    }
    const sent = await this.#sendContent(repo, prepared, content.digest, session, signal);
    return this.#commitUpload(repo, sent.location, sent.blob, undefined, signal);
  }

  /**
   * One attempt of a replayable upload into a session the registry opened already: a declined
   * mount's, or a reservation's ({@link reserveUpload}). A session that attempt leaves uncommitted
   * is cancelled and never sent a retry: after a failed request its state is unknown (distribution
   * cancels a failed commit itself, registry/handlers/blobupload.go PutBlobUploadComplete, but a
   * 5xx from a proxy or a reset connection leaves it open until the registry expires it), and
   * ggcr's retries, like ours, open a fresh one. Resolves undefined when an ordinary upload is
   * worth trying: a failure a retry may cure, or a session the registry no longer knows (404);
   * anything else is the answer.
   */
  async #uploadIntoOpened(repo: Repository, content: BlobBody, session: string, what: string, signal?: AbortSignal): Promise<UploadedBlob | undefined> {
    const prepared = requestBody(content);
    try {
      return await this.#uploadInto(repo, content, prepared, session, signal);
    } catch (err) {
      prepared.discard();
      // Wrong content has cancelled it already.
      if (!(err instanceof DigestMismatchError)) await this.#cancelUpload(repo, session);
      if (signal?.aborted && !(err instanceof AbortedError)) throw new AbortedError(`${what}: aborted`, { cause: err });
      const sessionLost = err instanceof RegistryError && err.status === 404;
      if (!sessionLost && !isRetryable(err, this.#policy)) throw withContext(err, what);
      this.#logger.debug('upload into the session the registry opened failed (uploading anew)', { repository: repositoryName(repo), error: describe(err) });
      return undefined;
    }
  }

  reserveUpload(repo: Repository, signal?: AbortSignal): UploadReservation {
    // One attempt, not retried: a session that cannot be had now is opened by upload() instead.
    const opened = this.#openUpload(repo, signal).catch((err: unknown) => {
      this.#logger.debug('reserving an upload session failed (the upload opens its own)', { repository: repositoryName(repo), error: describe(err) });
      return undefined;
    });
    let taken = false;
    // Whether the session was handed to an upload (which owns it from then on: it commits it, or
    // cancels it when its one PUT fails) or cancelled: a session upload() did not hand on (aborted
    // before it could) is still the reservation's, and release() cancels it.
    let spent = false;
    return {
      upload: async (bytes, uploadSignal) => {
        if (taken) throw new Error('an upload reservation is used once');
        taken = true;
        const session = await opened;
        const usable = session !== undefined && !spent && !uploadSignal?.aborted;
        if (usable) spent = true;
        return this.uploadBlob(repo, { bytes, digest: sha256(bytes) }, uploadSignal, usable ? session : undefined);
      },
      release: async () => {
        if (spent) return;
        spent = taken = true;
        const session = await opened;
        if (session) await this.#cancelUpload(repo, session);
      },
    };
  }

  /** POST: opens an upload session; resolves with its Location. */
  async #openUpload(repo: Repository, signal?: AbortSignal): Promise<string> {
    const action = `push ${repo.repository}`;
    const opened = await this.#send({
      repo, scopes: [pushScope(repo)], action, method: 'POST', target: `/v2/${repo.repository}/blobs/uploads/`, headers: { 'content-length': '0' }, signal,
    });
    if (opened.res.statusCode !== 202) throw await this.#error(opened.res, 'POST', opened.url, repo, action, opened.source);
    await opened.res.body.dump();
    return this.#location(opened.res, opened.url);
  }

  /**
   * PATCH: sends the whole body to the session; resolves with where to commit it and what was
   * sent. Bytes come with their verified digest. Content that turns out wrong (a digest other
   * than the one claimed, or a source stream failing its own check) cancels the session.
   *
   * Any 2xx is success: the spec says 202, but Amazon ECR answers 201 Created (regclient PR #82,
   * aws/containers-roadmap#2831), and ggcr's streamBlob accepts 202, 201 and 204. The upload is
   * committed by the PUT `?digest=` whatever the PATCH answered.
   */
  async #sendContent(
    repo: Repository, prepared: PreparedBody, claimed: Digest | undefined, location1: string, signal?: AbortSignal,
  ): Promise<{ location: string; blob: UploadedBlob }> {
    const action = `push ${repo.repository}`;
    const patched = await this.#sendBody(repo, 'PATCH', location1, prepared, location1, signal);
    if (patched.res.statusCode < 200 || patched.res.statusCode >= 300) {
      throw await this.#error(patched.res, 'PATCH', patched.url, repo, action, patched.source);
    }
    await patched.res.body.dump();
    const location2 = header(patched.res, 'location') ? this.#location(patched.res, patched.url) : location1;

    const actual = await prepared.sent();
    if (claimed && claimed !== actual.digest) {
      await this.#cancelUpload(repo, location2);
      throw contentMismatch(repo, claimed, actual.digest);
    }
    return { location: location2, blob: actual };
  }

  /**
   * Sends an upload request carrying a body (the PATCH, or a monolithic PUT). A body never (or
   * not fully) sent is stopped, not left half-read: a layer pass would otherwise stay open,
   * holding its buffers, for as long as the process lives. A body that failed its own digest
   * check cancels the session.
   */
  async #sendBody(repo: Repository, method: string, target: string, prepared: PreparedBody, session: string, signal?: AbortSignal): Promise<Sent> {
    try {
      return await this.#send({ repo, scopes: [pushScope(repo)], action: `push ${repo.repository}`, method, target, headers: prepared.headers, body: prepared.content, signal });
    } catch (err) {
      prepared.discard();
      if (err instanceof DigestMismatchError) await this.#cancelUpload(repo, session);
      throw err;
    }
  }

  /**
   * PUT `?digest=`: commits the session, either after a PATCH sent the bytes (`prepared` undefined)
   * or carrying the whole body (the monolithic upload). Verifies the digest the registry stored,
   * and that a body was what `blob.digest` names: wrong content fails as such (and cancels the
   * session), whatever the registry answered. Resolves with what is stored.
   */
  async #commitUpload(repo: Repository, location: string, blob: { digest: Digest; size: number }, prepared?: PreparedBody, signal?: AbortSignal): Promise<UploadedBlob> {
    const action = `push ${repo.repository}`;
    const put = new URL(location);
    put.searchParams.set('digest', blob.digest);
    const committed = prepared
      ? await this.#sendBody(repo, 'PUT', put.toString(), prepared, location, signal)
      : await this.#send({ repo, scopes: [pushScope(repo)], action, method: 'PUT', target: put.toString(), headers: { 'content-length': '0' }, signal });
    const { res, url, source } = committed;
    if (res.statusCode !== 201 && res.statusCode !== 204) {
      const err = await this.#error(res, 'PUT', url, repo, action, source);
      // Known when the registry read the whole body before refusing it: wrong content is
      // reported as that, not as the registry's DIGEST_INVALID.
      const actual = await prepared?.sent().catch(() => undefined);
      if (actual && actual.digest !== blob.digest) {
        await this.#cancelUpload(repo, location);
        throw contentMismatch(repo, blob.digest, actual.digest);
      }
      // A retried commit whose first attempt went through but whose answer was lost: the session
      // is gone (404), the blob is there. The registry has it under that digest, which it checked.
      if (res.statusCode === 404 && (await this.hasBlob(repo, blob.digest, signal))) return actual ?? blob;
      throw err;
    }
    await res.body.dump();
    const actual = prepared ? await prepared.sent() : blob;
    if (actual.digest !== blob.digest) throw contentMismatch(repo, blob.digest, actual.digest);
    const stored = header(res, 'docker-content-digest');
    if (stored && stored !== blob.digest) throw new DigestMismatchError(`blob pushed to ${repositoryName(repo)}`, blob.digest, stored);
    return actual;
  }

  async putManifest(repo: Repository, reference: string, bytes: Uint8Array, mediaType: string, signal?: AbortSignal): Promise<Digest> {
    const ref = manifestRefString(repo, reference);
    const digest = sha256(bytes);
    if (isDigest(reference) && reference !== digest) throw new DigestMismatchError(`pushing manifest ${ref}`, reference, digest, 'content');
    return this.#step(`pushing manifest ${ref}`, true, signal, async () => {
      const { res, url, source } = await this.#send({
        repo, scopes: [pushScope(repo)], action: `push ${repo.repository}`, method: 'PUT',
        target: `/v2/${repo.repository}/manifests/${reference}`,
        headers: { 'content-type': mediaType, 'content-length': String(bytes.byteLength) },
        body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), signal,
      });
      // Any 2xx: the spec says 201, old distribution releases answered 202, and ggcr accepts
      // 200/201/202. The digest check below still guards what was stored.
      if (res.statusCode < 200 || res.statusCode >= 300) {
        throw await this.#error(res, 'PUT', url, repo, `push ${repo.repository}`, source);
      }
      await res.body.dump();
      const stored = header(res, 'docker-content-digest');
      if (stored && stored !== digest) throw new DigestMismatchError(`manifest ${ref}`, digest, stored);
      return digest;
    });
  }

  /** One retried, context-adding step. */
  async #step<T>(what: string, replayable: boolean, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await withRetry(this.#policy, fn, { signal, logger: this.#logger, what, replayable });
    } catch (err) {
      if (signal?.aborted && !(err instanceof AbortedError)) throw new AbortedError(`${what}: aborted`, { cause: err });
      throw withContext(err, what);
    }
  }

  #location(res: Dispatcher.ResponseData, base: string): string {
    const loc = header(res, 'location');
    if (!loc) throw new RegistryError(`registry answered ${res.statusCode} without a Location header`, { method: 'POST', url: base, status: res.statusCode });
    return new URL(loc, base).toString();
  }

  /**
   * Refuses a registry-provided URL (Location, redirect) that points somewhere it must not. With
   * `privateRedirects`, a private target of a registry named by DNS waits for the lookup of that
   * name (once per registry, bounded; see {@link Authenticator.mayRedirect}).
   */
  async #follow(ep: Endpoint, target: URL, method: string, signal?: AbortSignal): Promise<URL> {
    if (target.origin !== ep.origin && !(await this.#auth.mayRedirect(ep, target, signal))) {
      const shown = redactUrl(target.toString(), ep.origin);
      throw new RegistryError(`refusing to follow registry ${ep.registry} to ${shown}: not an address a registry may send us to`, { method, url: shown });
    }
    return target;
  }

  /**
   * Refuses an https → http redirect hop unless the target is spoken to over plain http anyway
   * (an insecure registry, loopback): see {@link Call.noDowngrade}.
   */
  #refuseDowngrade(ep: Endpoint, from: URL, target: URL, method: string): void {
    if (from.protocol !== 'https:' || target.protocol !== 'http:' || isInsecure(target.host, this.#insecure)) return;
    const shown = redactUrl(target.toString(), ep.origin);
    throw new RegistryError(
      `refusing to follow registry ${ep.registry} from https to plain http ${shown}: a manifest read over it is not protected (list ${target.host} in insecureRegistries if that is intended)`,
      { method, url: shown },
    );
  }

  /**
   * Sends one request with auth: on a 401 carrying a new challenge (expired token, more scope
   * needed) it re-authenticates and resends once, if the body can be sent again.
   */
  async #send(call: Call): Promise<Sent> {
    const ep = this.endpoint(call.repo.registry);
    let scopes = call.scopes;
    for (let authAttempt = 0; ; authAttempt++) {
      const auth = await this.#auth.authorize(ep, scopes, call.action, call.signal);
      let target = await this.#follow(ep, new URL(call.target, ep.origin), call.method, call.signal);
      // Registry credentials go to the registry only: not to blob storage (S3, GCS) it redirects
      // to, nor to an upload Location on another origin.
      let authorization = target.origin === ep.origin ? auth.header : undefined;
      let url = target.toString();
      let res: Dispatcher.ResponseData;
      let foreignToken = false;
      for (let redirects = 0; ; redirects++) {
        res = await this.#raw(ep, call.method, url, { ...call.headers, ...(authorization ? { authorization } : {}) }, call.body, call.signal);
        if (call.followRedirects && !foreignToken && call.body === undefined && res.statusCode === 401 && new URL(url).origin !== ep.origin) {
          const foreign = await this.#foreignAuthorization(ep, res, url, call);
          if (foreign) {
            foreignToken = true;
            authorization = foreign;
            redirects--; // the same hop, asked again
            continue;
          }
        }
        const loc = header(res, 'location');
        if (!call.followRedirects || res.statusCode < 300 || res.statusCode >= 400 || res.statusCode === 304 || !loc) break;
        await res.body.dump();
        if (redirects >= MAX_REDIRECTS) throw new RegistryError(`too many redirects`, { method: call.method, url: redactUrl(url, ep.origin), status: res.statusCode });
        target = await this.#follow(ep, new URL(loc, url), call.method, call.signal);
        if (call.noDowngrade) this.#refuseDowngrade(ep, new URL(url), target, call.method);
        if (target.origin !== new URL(url).origin) authorization = undefined;
        url = target.toString();
      }
      const replayableBody = call.body === undefined || Buffer.isBuffer(call.body) || call.body instanceof Uint8Array;
      if (res.statusCode === 401 && authAttempt === 0 && replayableBody && new URL(url).origin === ep.origin) {
        const retryScopes = this.#auth.onUnauthorized(ep.registry, res.headers['www-authenticate'], scopes, auth);
        if (retryScopes) {
          await res.body.dump();
          scopes = retryScopes;
          continue;
        }
      }
      return { res, url, source: auth.source };
    }
  }

  /**
   * The Authorization for a redirect target on another origin that answered `res` (a 401) with a
   * Bearer challenge: an anonymous token from that challenge's realm, for the scopes it names
   * (else pull on the repository in the target's path). Undefined, `res` left unread, when there
   * is no Bearer challenge. The registry's own credentials never leave it.
   */
  async #foreignAuthorization(ep: Endpoint, res: Dispatcher.ResponseData, url: string, call: Call): Promise<string | undefined> {
    const challenge = parseWwwAuthenticate(res.headers['www-authenticate']).find((c) => c.scheme === 'bearer');
    if (!challenge) return undefined;
    await res.body.dump();
    let scopes = challengeScopes(challenge);
    if (!scopes.length) {
      const name = /^\/v2\/(.+)\/(?:manifests|blobs)\/[^/]+$/.exec(new URL(url).pathname)?.[1];
      scopes = name ? [`repository:${name}:pull`] : [];
    }
    this.#logger.debug('redirect target wants a token; fetching an anonymous one', { registry: ep.registry, url: redactUrl(url, ep.origin) });
    const token = await this.#auth.anonymousToken(ep, challenge, scopes, call.action, call.signal);
    return `Bearer ${token}`;
  }

  async #raw(ep: Endpoint, method: string, url: string, headers: Record<string, string>, body: Body, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const started = Date.now();
    const shown = redactUrl(url, ep.origin);
    try {
      const res = await request(url, {
        method: method as Dispatcher.HttpMethod,
        headers: { 'user-agent': this.#userAgent, ...headers },
        ...(body !== undefined ? { body } : {}),
        ...(signal ? { signal } : {}),
        ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}),
      });
      this.#logger.debug('http', { method, url: shown, status: res.statusCode, ms: Date.now() - started });
      return res;
    } catch (err) {
      if (signal?.aborted) throw new AbortedError('aborted', { cause: err });
      if (err instanceof DigestMismatchError || err instanceof AbortedError) throw err;
      // The request body failed, not the network: a file that vanished, a truncated bundle. That
      // error is the user's to see as it is (and usually not temporary), never a retryable
      // network failure.
      const fromBody = bodyError(err);
      if (fromBody) throw fromBody;
      this.#logger.debug('http', { method, url: shown, error: describe(err), ms: Date.now() - started });
      throw new NetworkError(`${method} ${shown} failed: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * Reads a registry's error response into the matching error class. `elsewhere` says what a
   * redirect target on another origin is: `storage` (the default: blob downloads, upload
   * Locations), where a 401/403 is a refused signed URL, temporary; or `registry` (a manifest
   * GET, registry.k8s.io's mirrors), where it is a refusal of the anonymous reader by that host.
   */
  async #error(
    res: Dispatcher.ResponseData,
    method: string,
    url: string,
    repo: Repository,
    action: string,
    source: string,
    { notFound, elsewhere = 'storage' }: { notFound?: () => Error; elsewhere?: 'storage' | 'registry' } = {},
  ): Promise<Error> {
    const registryOrigin = this.endpoint(repo.registry).origin;
    const where = new URL(url);
    url = redactUrl(url, registryOrigin);
    let text = '';
    try {
      text = (await readPrefix(res.body, MAX_ERROR_BODY)).toString('utf8');
    } catch {
      // the body is best effort
    }
    let errors: RegistryErrorDetails['errors'];
    try {
      const parsed = JSON.parse(text) as { errors?: unknown };
      if (Array.isArray(parsed.errors)) {
        errors = parsed.errors
          .filter((e): e is { code: unknown; message?: unknown; detail?: unknown } => typeof e === 'object' && e !== null)
          .map((e) => ({
            code: String(e.code ?? 'UNKNOWN'),
            ...(typeof e.message === 'string' ? { message: e.message } : {}),
            ...(e.detail !== undefined ? { detail: e.detail } : {}),
          }));
      }
    } catch {
      // not JSON
    }
    const details: RegistryErrorDetails = { method, url, status: res.statusCode, ...(errors ? { errors } : {}) };
    if ((res.statusCode === 401 || res.statusCode === 403) && where.origin !== registryOrigin) {
      if (elsewhere === 'registry') {
        // The registry's credentials never go there: only an anonymous token of its own did.
        const what = `${action} (${repo.registry} redirected the request there)`;
        return res.statusCode === 401
          ? new UnauthorizedError(where.host, ANONYMOUS_SOURCE, what, details)
          : new DeniedError(where.host, ANONYMOUS_SOURCE, what, details);
      }
      // Storage's own error body is left out: S3 echoes the canonical request, signed query included.
      return new BlobStorageError(where.host, { method, url, status: res.statusCode });
    }
    if (notFound && errors?.some((e) => e.code === 'MANIFEST_UNKNOWN' || e.code === 'NAME_UNKNOWN')) return notFound();
    let err: Error;
    if (res.statusCode === 401 && source !== ANONYMOUS_SOURCE && insufficientScope(res)) err = new DeniedError(repo.registry, source, action, details);
    else if (res.statusCode === 401) err = new UnauthorizedError(repo.registry, source, action, details);
    else if (res.statusCode === 403) err = new DeniedError(repo.registry, source, action, details);
    else {
      const summary = registryErrorSummary(errors) || registryErrorSummary([{ code: text.slice(0, 200) }]) || res.statusText || '';
      err = new RegistryError(`${method} ${redactUrl(url)} returned ${res.statusCode}${summary ? ` (${summary})` : ''}`, details);
    }
    const after = parseRetryAfter(header(res, 'retry-after'));
    if (after !== undefined) setRetryAfter(err, after);
    return err;
  }
}
