import type { EntrySource } from '../layer/entry.ts';
import type { LayerDigests } from '../layer/layer.ts';
import type { LayerLimits } from '../layer/tar.ts';
import type { Logger, ProgressEvent } from '../log.ts';
import type { Digest, Platform } from '../oci/types.ts';
import type { Reference } from '../reference/reference.ts';
import type { Registry } from '../registry/types.ts';

/**
 * Everything one build needs, already validated and typed. The CLI (flags or --spec) and the
 * Cloud Function (a spec object in a bucket) each translate their input into one of these;
 * the build never sees strings it has to parse again.
 */
export interface BuildRequest {
  /** The base image, or `'scratch'` for none. */
  readonly base: Reference | 'scratch';
  /** Which platforms to build: the base's only/default one, a list, or every one the base has. */
  readonly platforms: 'default' | 'all' | readonly Platform[];
  /** The new layer's content; re-openable so an upload can be retried without a temp file. */
  readonly files: EntrySource;
  /** Normalisation applied to every entry of the new layer. */
  readonly layer: LayerPolicy;
  readonly config: ConfigChanges;
  /** Manifest annotations (OCI family only; the docker family has no annotations). */
  readonly annotations: Readonly<Record<string, string>>;
  readonly outputs: Outputs;
  /**
   * The new layer as an earlier build made it from exactly these files under this same
   * {@link LayerPolicy}, for callers that can vouch for that: the Cloud Function keys it on the
   * pinned generation of every object it reads. When the first target repository still holds that
   * blob, the files are not read at all, so a rebuild on a new base costs a few requests instead of
   * a pass over every byte. Otherwise (the blob is gone, no registry target, or an OCI layout or
   * tarball to write, which need the bytes) the files are read as usual. Nothing compares the
   * files with it: a wrong hint gives an image with that layer.
   */
  readonly knownLayer?: LayerDigests;
  /**
   * Bounds on the new layer's paths, for files someone else controls: the Cloud Function passes
   * `LAYER_LIMITS` (layer/tar.ts), so a bundle of millions of long names is refused instead of running it
   * out of memory. None by default.
   */
  readonly layerLimits?: LayerLimits;
}

export interface LayerPolicy {
  /** Seconds since the epoch for every entry (SOURCE_DATE_EPOCH, else 0). Also the config's `created`. */
  readonly mtime: number;
  /** Owner of every entry; default 0:0. */
  readonly chown?: { readonly uid: number; readonly gid: number };
  /** Keep setuid/setgid bits (dropped by default). */
  readonly keepSpecialBits?: boolean;
}

/** Changes to the base's container config. Absent fields inherit from the base. */
export interface ConfigChanges {
  /** Merged by key into the base's Env, in this order; a key already in the base is replaced in place. */
  readonly env?: ReadonlyArray<readonly [string, string]>;
  readonly cmd?: readonly string[];
  /** Setting an entrypoint clears the inherited Cmd unless `cmd` is given too (Docker's rule). */
  readonly entrypoint?: readonly string[];
  readonly workdir?: string;
  readonly user?: string;
  /** Merged into the base's labels. */
  readonly labels?: Readonly<Record<string, string>>;
  /** "8080/tcp", "53/udp"; added to the base's. */
  readonly exposedPorts?: readonly string[];
  /**
   * The history entry's created_by. The CLI's -f builds write the destinations
   * (`artificer: COPY /server /conf/`), --spec builds `artificer --spec`, the Cloud Function
   * `artificer cloud function (gs://…)`; absent, `artificer`.
   */
  readonly createdBy?: string;
}

export interface Outputs {
  /** Every tag to push (the --target and each --tag). All in one repository or several. */
  readonly registry: readonly Reference[];
  /** Write an OCI image layout to this directory. */
  readonly ociLayout?: string;
  /** Write a `docker load`-able tarball to this file. */
  readonly tarball?: string;
}

export interface BuildContext {
  readonly registry: Registry;
  readonly logger?: Logger;
  readonly onProgress?: (event: ProgressEvent) => void;
  readonly signal?: AbortSignal;
  /** Maximum blob uploads in flight (default 4). */
  readonly concurrency?: number;
  /**
   * Called before each tag is written, with the reference about to be tagged; throwing stops
   * the build there (the Cloud Function checks that the upload it builds is still the newest).
   */
  readonly beforeTag?: (reference: string) => Promise<void>;
}

export interface BuiltImage {
  /** The platform of this image; absent for a single-platform build without an index. */
  readonly platform?: Platform;
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
}

export interface BuildResult {
  /**
   * Digest of what the tags point at: the index for multi-platform builds, else the manifest.
   * With no registry target, of what the OCI layout holds when one is written (a Docker base's
   * image goes there as its OCI twin, under another digest), else of the Docker-family image.
   */
  readonly digest: Digest;
  readonly mediaType: string;
  /** `registry/repository@sha256:…` for each distinct repository pushed to. */
  readonly images: readonly string[];
  /** The tags pushed, as full references. */
  readonly tags: readonly string[];
  /** The per-platform manifests {@link digest} names (or is, for a single platform). */
  readonly manifests: readonly BuiltImage[];
  /** Compressed size of the new layer. */
  readonly layerBytes: number;
  /** The new layer's digests (the same in every image of the build). */
  readonly layer: LayerDigests;
  /** True when the layer was the request's {@link BuildRequest.knownLayer}, found in the registry, and no file was read. */
  readonly layerReused: boolean;
}
