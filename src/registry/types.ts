import type { Readable } from 'node:stream';
import type { Descriptor, Digest, ImageIndex, ImageManifest } from '../oci/types.ts';

/** A repository on a registry: `registry` is the host[:port] as written by the user ("docker.io", "localhost:5000"). */
export interface Repository {
  readonly registry: string;
  readonly repository: string;
}

/** A credential for one registry, as docker config.json or a credential helper returns it. */
export interface Credential {
  readonly username?: string;
  readonly password?: string;
  /** OAuth2 refresh token (docker `identitytoken`), exchanged at the token endpoint. */
  readonly identityToken?: string;
  /** A bearer token to send as-is (docker `registrytoken`). */
  readonly registryToken?: string;
}

export interface ResolvedCredential {
  readonly credential: Credential;
  /**
   * Where it came from, for messages: "docker config /home/u/.docker/config.json",
   * "credential helper docker-credential-gcloud", "google application default credentials".
   * Never the secret.
   */
  readonly source: string;
}

/**
 * Finds credentials for a registry host. The CLI uses docker's config.json chain; the Cloud
 * Function plugs in Google credentials. `resolve` is called again whenever a token is rejected
 * or expires, so a provider may hand out fresh short-lived tokens.
 */
export interface CredentialProvider {
  resolve(registry: string, signal?: AbortSignal): Promise<ResolvedCredential | undefined>;
}

/** A manifest or index as fetched: the exact bytes (the digest is over them) and the parsed JSON. */
export interface FetchedManifest {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly bytes: Buffer;
  readonly manifest: ImageManifest | ImageIndex;
}

/**
 * A stream that hashes itself (a layer does, for its manifest): `measured` settles with the
 * digest and size of exactly what `stream` delivered, once it has ended.
 */
export interface MeasuredStream {
  readonly stream: Readable;
  readonly measured: Promise<UploadedBlob>;
}

/**
 * The body of a blob upload. Bytes are replayable; a stream factory is replayable as long as the
 * factory can be called again (a re-openable layer). When `digest` is not given the upload is
 * finished with the digest of what was sent: the client hashes a plain stream on the way, and
 * takes a {@link MeasuredStream}'s own (hashing every byte twice cost ~3 % of a text push).
 */
export type BlobBody =
  | { readonly bytes: Uint8Array; readonly digest?: Digest }
  | {
      readonly open: () => Readable | MeasuredStream;
      readonly digest?: Digest;
      readonly size?: number;
      readonly replayable: boolean;
    };

export interface UploadedBlob {
  readonly digest: Digest;
  readonly size: number;
}

/** An upload session opened before its bytes exist: see {@link Registry.reserveUpload}. */
export interface UploadReservation {
  /**
   * Uploads `bytes` with one PUT into the reserved session, as {@link Registry.uploadBlob} does
   * into a session it is given. When that session could not be opened, or the PUT into it fails
   * in a way a fresh session may cure (a session the registry expired, a temporary failure), the
   * bytes go as an ordinary upload with its retries, and its errors are the ones reported; a
   * refusal is the answer. A session the PUT failed in is cancelled either way. Use once.
   */
  upload(bytes: Uint8Array, signal?: AbortSignal): Promise<UploadedBlob>;
  /** Cancels the session unless {@link upload} used it (best effort; never rejects). */
  release(): Promise<void>;
}

/**
 * What a cross-repository mount did. A registry that declines may answer 202 Accepted with an
 * ordinary upload session, which the client MAY use (distribution spec, "Mounting a blob from
 * another repository"; go-containerregistry's remote.write does): `session` is its Location.
 * Amazon ECR declines unless a manifest in the source repository references the blob
 * (aws/containers-roadmap#2860), so a new base's blobs there usually take this path.
 */
export type MountResult = { readonly mounted: true } | { readonly mounted: false; readonly session?: string };

/** What the build and push code needs of a registry client. */
export interface Registry {
  getManifest(repo: Repository, reference: string, signal?: AbortSignal): Promise<FetchedManifest>;
  hasBlob(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<boolean>;
  getBlob(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<{ stream: Readable; size: number }>;
  getBlobBytes(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<Buffer>;
  /**
   * Cross-repository mount. When the registry did not mount, upload next, passing the `session`
   * it may have opened to {@link uploadBlob}.
   */
  mountBlob(repo: Repository, digest: Digest, from: Repository, signal?: AbortSignal): Promise<MountResult>;
  /**
   * `session`: an upload session the registry already opened (a declined mount's {@link
   * MountResult}), used instead of opening one. The upload owns it from then on. A replayable
   * body goes into it once: when that fails the session is cancelled, and a retry opens a fresh
   * one. A single-pass body goes into it as into the session it would have opened.
   */
  uploadBlob(repo: Repository, body: BlobBody, signal?: AbortSignal, session?: string): Promise<UploadedBlob>;
  /**
   * Opens an upload session now for bytes known only later (an image's config, which needs the
   * new layer's diffID): their upload is then one request instead of two. Optional; without
   * it, such bytes go through {@link uploadBlob}.
   */
  reserveUpload?(repo: Repository, signal?: AbortSignal): UploadReservation;
  /** PUT a manifest under a tag or digest; verifies `Docker-Content-Digest` and returns the digest. */
  putManifest(repo: Repository, reference: string, bytes: Uint8Array, mediaType: string, signal?: AbortSignal): Promise<Digest>;
}

export type { Descriptor };
