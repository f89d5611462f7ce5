import { PlatformMismatchError, UnsupportedError, UsageError } from '../errors.ts';
import {
  familyOf,
  formatPlatform,
  isIndexMediaType,
  type Digest,
  type Family,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../oci/types.ts';
import { repositoryOf, type Reference } from '../reference/reference.ts';
import type { Registry, Repository } from '../registry/types.ts';
import { DEFAULT_PLATFORM, platformMatches, requireLinux, selectEntries, wantedName } from './platform.ts';
import { Limiter } from './push.ts';
import type { BuildRequest } from './request.ts';

/** One platform's image of the base: what the new image is built on. */
export interface BaseImage {
  readonly platform: Platform;
  /** Absent for `scratch`. */
  readonly manifest?: ImageManifest;
  readonly manifestDigest?: Digest;
  readonly config?: ImageConfig;
}

export interface ResolvedBase {
  /** Absent for `scratch`. */
  readonly reference?: Reference;
  readonly repo?: Repository;
  /** Docker or OCI: the new image keeps its base's family. `scratch` builds OCI. */
  readonly family: Family;
  readonly images: readonly BaseImage[];
  /** True when the result is an index (several platforms, or `--platform all` on an index). */
  readonly multiPlatform: boolean;
}

function platformOfConfig(config: ImageConfig): Platform {
  return config.variant
    ? { os: config.os, architecture: config.architecture, variant: config.variant }
    : { os: config.os, architecture: config.architecture };
}

/**
 * Most bytes the manifests and configs of one base may take together: they are held for the whole
 * build. One manifest may be 4 MiB and one config 16 MiB (the registry client's limits), so the
 * 64 platforms (`MAX_PLATFORMS`) of a hostile index held 1.25 GiB; real ones take KiBs each.
 */
export const MAX_BASE_METADATA_BYTES = 32 * 1024 * 1024;
/** Platforms of an index whose manifest and config are fetched at once. */
const FETCH_CONCURRENCY = 4;

/** Counts the bytes of a base's manifests and configs against {@link MAX_BASE_METADATA_BYTES}. */
function metadataBudget(reference: Reference): (bytes: number, at: string) => void {
  let used = 0;
  return (bytes, at) => {
    used += bytes;
    if (used > MAX_BASE_METADATA_BYTES) {
      throw new UnsupportedError(`base image ${reference}: its manifests and configs take more than ${MAX_BASE_METADATA_BYTES} bytes (at ${at}); real images take a few KiB a platform`);
    }
  };
}

async function fetchImage(registry: Registry, repo: Repository, ref: string, reference: Reference, spend: (bytes: number, at: string) => void, at: string, signal?: AbortSignal) {
  const fetched = await registry.getManifest(repo, ref, signal);
  spend(fetched.bytes.byteLength, at);
  if (isIndexMediaType(fetched.mediaType)) {
    throw new UnsupportedError(`${reference}: an index inside an index (${fetched.digest}) is not supported`);
  }
  const manifest = fetched.manifest as ImageManifest;
  const bytes = await registry.getBlobBytes(repo, manifest.config.digest, signal);
  spend(bytes.byteLength, at);
  const config = JSON.parse(bytes.toString('utf8')) as ImageConfig;
  return { manifest, manifestDigest: fetched.digest, config };
}

/**
 * Reads the base image's manifest (or index) and the config of each platform to build on.
 * Only manifests and configs are fetched: base layers are never downloaded here, they are
 * mounted or streamed registry to registry when pushed.
 */
export async function resolveBase(req: Pick<BuildRequest, 'base' | 'platforms'>, registry: Registry, signal?: AbortSignal): Promise<ResolvedBase> {
  const wanted = req.platforms;
  if (wanted !== 'default' && wanted !== 'all') wanted.forEach(requireLinux);
  if (req.base === 'scratch') {
    if (wanted === 'all') throw new UsageError('--platform all needs a base image to take the platforms from; scratch has none (name them, e.g. --platform linux/amd64 --platform linux/arm64)');
    const platforms = wanted === 'default' ? [DEFAULT_PLATFORM] : wanted;
    return { family: 'oci', images: platforms.map((platform) => ({ platform })), multiPlatform: platforms.length > 1 };
  }

  const reference = req.base;
  const repo = repositoryOf(reference);
  const top = await registry.getManifest(repo, reference.digest ?? reference.tag ?? 'latest', signal);
  const family = familyOf(top.mediaType);
  const spend = metadataBudget(reference);
  spend(top.bytes.byteLength, String(reference));

  if (isIndexMediaType(top.mediaType)) {
    const chosen = selectEntries((top.manifest as ImageIndex).manifests, wanted, String(reference));
    // Named by position: the index's own platform names are the registry's text. After a
    // failure the platforms still waiting are not fetched.
    const limiter = new Limiter(FETCH_CONCURRENCY);
    let failed: unknown;
    const images = await Promise.all(
      chosen.map((desc, i) =>
        limiter.run(async () => {
          if (failed !== undefined) throw failed;
          const img = await fetchImage(registry, repo, desc.digest, reference, spend, `platform ${i + 1} of ${chosen.length}`, signal).catch((err: unknown) => {
            failed ??= err;
            throw err;
          });
          return { ...img, platform: desc.platform ?? platformOfConfig(img.config) };
        }),
      ),
    );
    return { reference, repo, family, images, multiPlatform: wanted === 'all' || images.length > 1 };
  }

  const manifest = top.manifest as ImageManifest;
  const configBytes = await registry.getBlobBytes(repo, manifest.config.digest, signal);
  spend(configBytes.byteLength, String(reference));
  const config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  const platform = platformOfConfig(config);
  // A Windows image (mcr.microsoft.com/windows/nanoserver:<version>) is never built on: see requireLinux.
  if (platform.os !== 'linux') throw new PlatformMismatchError(String(reference), wanted === 'all' ? 'all' : 'Linux', [formatPlatform(platform)]);
  if (wanted !== 'default' && wanted !== 'all') {
    for (const p of wanted) {
      if (!platformMatches(p, platform)) throw new PlatformMismatchError(String(reference), wantedName(p), [formatPlatform(platform)]);
    }
  }
  return { reference, repo, family, images: [{ platform, manifest, manifestDigest: top.digest, config }], multiPlatform: false };
}
