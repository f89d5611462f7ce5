import type { ConfigChanges, LayerPolicy } from './request.ts';
import type { ContainerConfig, Digest, HistoryEntry, ImageConfig, Platform } from '../oci/types.ts';

/** The ISO timestamp every new image records: the layer mtime, never "now" (reproducibility). */
export function createdAt(policy: LayerPolicy): string {
  return new Date(policy.mtime * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/** Merges `K=V` pairs into a Docker/OCI `Env` list by key: a key already present keeps its place. */
export function mergeEnv(base: readonly string[] | undefined, changes: ReadonlyArray<readonly [string, string]>): string[] {
  const env = [...(base ?? [])];
  for (const [key, value] of changes) {
    const i = env.findIndex((e) => e === key || e.startsWith(`${key}=`));
    if (i >= 0) env[i] = `${key}=${value}`;
    else env.push(`${key}=${value}`);
  }
  return env;
}

/**
 * The container config of the new image: the base's, with the requested changes applied the way
 * a Dockerfile would apply them.
 *
 * Docker's rule for ENTRYPOINT: setting one resets the inherited CMD (a base `CMD ["sh"]` would
 * otherwise become an argument of the new entrypoint), unless a CMD is given in the same build.
 */
export function applyContainerConfig(base: ContainerConfig | undefined, changes: ConfigChanges): ContainerConfig {
  const out: Record<string, unknown> = { ...(base ?? {}) };
  // ONBUILD triggers run when an image is built FROM the base, and Docker's builder then clears
  // them (moby's processOnBuild: "the config will be committed"); nothing here can run them, and
  // kept they would fire a generation late, in whatever is built FROM this image. The build warns.
  delete out.OnBuild;
  if (changes.env?.length) out.Env = mergeEnv(base?.Env, changes.env);
  if (changes.entrypoint) {
    out.Entrypoint = [...changes.entrypoint];
    if (!changes.cmd) delete out.Cmd;
  }
  if (changes.cmd) out.Cmd = [...changes.cmd];
  if (changes.workdir !== undefined) out.WorkingDir = changes.workdir;
  if (changes.user !== undefined) out.User = changes.user;
  if (changes.labels && Object.keys(changes.labels).length) out.Labels = { ...(base?.Labels ?? {}), ...changes.labels };
  if (changes.exposedPorts?.length) {
    const ports: Record<string, object> = { ...(base?.ExposedPorts ?? {}) };
    for (const p of changes.exposedPorts) ports[p] = {};
    out.ExposedPorts = ports;
  }
  return out as ContainerConfig;
}

/**
 * The new image config: base config (or an empty one for `scratch`) plus one layer.
 * Unknown top-level fields of the base (Docker's `container`, `docker_version`, …) are kept,
 * since dropping them would change nothing but the digest.
 */
export function newImageConfig(
  base: ImageConfig | undefined,
  platform: Platform,
  changes: ConfigChanges,
  policy: LayerPolicy,
  diffId: Digest,
): ImageConfig {
  const created = createdAt(policy);
  const history = alignedHistory(base?.history, base?.rootfs.diff_ids.length ?? 0);
  history.push({ created, created_by: changes.createdBy ?? 'artificer', comment: 'artificer' });
  const start: Record<string, unknown> = base
    ? { ...base }
    : {
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant ? { variant: platform.variant } : {}),
      };
  // An arm config without the variant its index entry names (older official arm images): the
  // image is what the index says, and `crane validate` refuses the mismatch.
  if (base && !base.variant && platform.variant && base.architecture === platform.architecture) start.variant = platform.variant;
  return {
    ...start,
    created,
    architecture: base?.architecture ?? platform.architecture,
    os: base?.os ?? platform.os,
    config: applyContainerConfig(base?.config, changes),
    rootfs: { type: 'layers', diff_ids: [...(base?.rootfs.diff_ids ?? []), diffId] },
    history,
  } as ImageConfig;
}

/** What a history entry added for a base layer its history does not describe says. */
export const UNDESCRIBED_LAYER_COMMENT = 'artificer: a base layer its history did not describe';

/**
 * The base's history, lined up with its `layers` the way consumers pair them (every entry that is
 * not `empty_layer` describes the next layer): buildah refuses to build on an image whose history
 * counts fewer or more layers than it has ("history lists 2 non-empty layers, but we have 4"),
 * and `docker history` and scanners put descriptions on the wrong layers. Bases without a history
 * or with a short one exist (AWS Lambda's had `history: null`; rules_oci and `buildah
 * --omit-history` made them), and appending our entry would shift every description onto the
 * wrong layer. As BuildKit's normalizeLayersAndHistory does: entries for layers the history does
 * not cover are added at its end, and non-empty entries beyond the layers are marked empty.
 */
export function alignedHistory(history: readonly HistoryEntry[] | null | undefined, layers: number): HistoryEntry[] {
  let described = 0;
  const out = (history ?? []).map((h) => {
    if (h.empty_layer) return h;
    if (described >= layers) return { ...h, empty_layer: true };
    described++;
    return h;
  });
  for (; described < layers; described++) out.push({ comment: UNDESCRIBED_LAYER_COMMENT });
  return out;
}
