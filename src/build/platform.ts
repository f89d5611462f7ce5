import { PlatformMismatchError, UnsupportedError, UsageError } from '../errors.ts';
import { formatPlatform, type Descriptor, type Platform } from '../oci/types.ts';

/**
 * The platform chosen when the user names none and the base's index has several. Fixed rather than
 * the host's, so the same command gives the same digest on a laptop and on an arm64 CI runner
 * (ko and crane default to linux/amd64 for the same reason).
 */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

/**
 * Refuses a platform other than Linux. artificer's layer is a Linux tar; a Windows image needs
 * layers in Windows' own format (Files/ and Hives/, with PAX security descriptors), and its base
 * layers are foreign ("non-distributable") blobs that registries will not let us copy. macOS and
 * the rest have no container images to build on.
 */
export function requireLinux(p: Platform): void {
  if (p.os !== 'linux') {
    throw new UsageError(`platform "${formatPlatform(p)}": artificer builds Linux images only (Windows images need another layer format, and their base layers cannot be copied)`);
  }
}

/**
 * Parses `os/arch[/variant]` ("linux/arm64", "linux/arm/v7"); only Linux (see {@link requireLinux}).
 * In lower case, as docker and containerd normalise it (`LINUX/AMD64` is linux/amd64): image
 * indexes write platforms in lower case, and an upper-case name matched none of them.
 */
export function parsePlatform(text: string): Platform {
  const parts = text.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/i.test(p))) {
    throw new UsageError(`invalid platform "${text}": expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  const platform = variant ? { os, architecture, variant } : { os, architecture };
  requireLinux(platform);
  return platform;
}

/**
 * A variant as containerd normalises it (containerd/platforms `Normalize`), which is what docker
 * pulls: arm without a variant is v7, a bare number is "v" + it, and arm64's v8 is the same as none.
 */
function normalVariant(p: Pick<Platform, 'architecture' | 'variant'>): string | undefined {
  const v = p.variant && /^[5-8]$/.test(p.variant) ? `v${p.variant}` : p.variant;
  if (p.architecture === 'arm') return v ?? 'v7';
  if (p.architecture === 'arm64' && (v === undefined || v === 'v8')) return undefined;
  return v;
}

/** What a bare arm accepts, best first: containerd's `platforms.Only(linux/arm/v7)` also runs v6 and v5. */
const BARE_ARM_VARIANTS: readonly string[] = ['v7', 'v6', 'v5'];

/**
 * The variants a wanted platform accepts, best first; undefined when any will do. A bare arm takes
 * v7, else v6, else v5 (so a bare linux/arm does not pick alpine's arm/v6, listed first, yet still
 * builds on a v6-only base, as docker does); a variant asked for is matched exactly.
 */
function acceptedVariants(p: Platform): readonly string[] | undefined {
  if (p.architecture === 'arm' && p.variant === undefined) return BARE_ARM_VARIANTS;
  const v = normalVariant(p);
  return v === undefined ? undefined : [v];
}

/** How a wanted platform is named in a mismatch: a bare arm as the variants it would take. */
export function wantedName(p: Platform): string {
  if (p.architecture === 'arm' && p.variant === undefined) return `${formatPlatform(p)}/${BARE_ARM_VARIANTS[0]} (or ${BARE_ARM_VARIANTS.slice(1).join(', ')})`;
  return formatPlatform(p);
}

/** Whether `candidate` satisfies `wanted`: same os and arch, and a variant `wanted` accepts (see {@link acceptedVariants}). */
export function platformMatches(wanted: Platform, candidate: Platform | undefined): boolean {
  if (!candidate) return false;
  if (wanted.os !== candidate.os || wanted.architecture !== candidate.architecture) return false;
  const accepted = acceptedVariants(wanted);
  return accepted === undefined || accepted.includes(normalVariant(candidate) ?? '');
}

/** The entry of `entries` that best satisfies `wanted`: the first of the most preferred variant there is. */
function bestMatch(wanted: Platform, entries: readonly Descriptor[]): Descriptor | undefined {
  const matching = entries.filter((e) => platformMatches(wanted, e.platform));
  const accepted = acceptedVariants(wanted);
  if (!accepted) return matching[0];
  for (const v of accepted) {
    const found = matching.find((e) => normalVariant(e.platform!) === v);
    if (found) return found;
  }
  return undefined;
}

/**
 * The image entries of an index: drops attestation manifests (BuildKit stores provenance as
 * `unknown/unknown` entries) and anything without a platform.
 */
export function imageEntries(manifests: readonly Descriptor[]): Descriptor[] {
  return manifests.filter((m) => m.platform && m.platform.os !== 'unknown' && m.platform.architecture !== 'unknown');
}

export function availablePlatforms(manifests: readonly Descriptor[]): string[] {
  return imageEntries(manifests).map((m) => formatPlatform(m.platform!));
}

/**
 * The most platforms one build makes. Each is a manifest and a config fetched at once from the
 * base's registry, then an image pushed: an index may list thousands (distribution takes 4 MiB
 * of it, ~20,000 entries), and a hostile base on `platforms: "all"` had the Cloud Function open
 * that many requests together. Real indexes list about ten (docker's official images: amd64,
 * arm/v5-v7, arm64, 386, ppc64le, riscv64, s390x, mips64le).
 */
export const MAX_PLATFORMS = 64;

/**
 * The entries of a base index to build on, for a request's `platforms`. Only Linux entries are
 * built on: python, eclipse-temurin and mcr.microsoft.com/dotnet list windows/amd64 next to
 * their Linux images, and a Linux layer on a Windows image is broken (see {@link requireLinux}).
 * - `default`: the index's only Linux platform when it has just one (attestations aside), so an
 *   arm64-only base builds arm64 as the help promises, else {@link DEFAULT_PLATFORM};
 * - `all`: every Linux platform;
 * - a list: for each, the first entry that matches it best (a bare arm: v7, else v6, else v5);
 *   a non-Linux one is a usage error.
 * Throws {@link PlatformMismatchError} (naming everything the index has, Windows included) when
 * a platform is missing, {@link UnsupportedError} past {@link MAX_PLATFORMS}.
 */
export function selectEntries(manifests: readonly Descriptor[], wanted: 'default' | 'all' | readonly Platform[], reference: string): Descriptor[] {
  const available = availablePlatforms(manifests);
  const entries = imageEntries(manifests).filter((e) => e.platform!.os === 'linux');
  if (wanted !== 'default' && wanted !== 'all') wanted.forEach(requireLinux);
  if (wanted === 'all') {
    if (!entries.length) throw new PlatformMismatchError(reference, 'all', available);
    return atMostMax(entries, reference);
  }
  if (wanted === 'default' && entries.length === 1) return entries;
  const list = wanted === 'default' ? [DEFAULT_PLATFORM] : wanted;
  const picked = list.map((p) => {
    const match = bestMatch(p, entries);
    if (!match) throw new PlatformMismatchError(reference, wantedName(p), available);
    return match;
  });
  // Two spellings of one platform (linux/arm64 and linux/arm64/v8) pick the same entry: once.
  // By entry, not digest: two platforms may share one manifest (arm/v6 and arm/v7), and both stay.
  return atMostMax(picked.filter((e, i) => picked.indexOf(e) === i), reference);
}

function atMostMax(entries: Descriptor[], reference: string): Descriptor[] {
  if (entries.length > MAX_PLATFORMS) {
    throw new UnsupportedError(`base image ${reference}: building on ${entries.length} of its platforms; at most ${MAX_PLATFORMS} are built in one build`);
  }
  return entries;
}
