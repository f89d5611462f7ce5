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
  const history: HistoryEntry[] = [...(base?.history ?? [])];
  history.push({ created, created_by: changes.createdBy ?? 'artificer', comment: 'artificer' });
  const start: Record<string, unknown> = base
    ? { ...base }
    : {
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant ? { variant: platform.variant } : {}),
      };
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
