import type { BuildRequest, ConfigChanges } from '../build/request.ts';
import { InvalidSpecError } from '../errors.ts';
import type { EntrySource } from '../layer/entry.ts';
import { isTag, parseReference, withTag, type Reference } from '../reference/reference.ts';
import type { BuildSpec } from './spec.ts';

export interface SpecRequestOptions {
  /** SOURCE_DATE_EPOCH: mtime of every entry and the config's `created`; default 0. */
  readonly sourceDateEpoch?: number;
  /** The history entry's `created_by`; default `artificer --spec`. */
  readonly createdBy?: string;
}

/**
 * Extra tags for `target`: a bare tag (a string like "v1.2") joins the target's repository,
 * anything else is a full reference; duplicates and the target itself are dropped. The CLI's
 * `--tag` and a spec's `tags` both go through here.
 */
export function resolveTags(target: Reference, tags: readonly (string | Reference)[]): Reference[] {
  const out: Reference[] = [];
  const seen = new Set([String(target)]);
  for (const t of tags) {
    const ref = typeof t !== 'string' ? t : isTag(t) ? withTag(target, t) : parseReference(t);
    if (!seen.has(String(ref))) {
      seen.add(String(ref));
      out.push(ref);
    }
  }
  return out;
}

/**
 * Turns a validated spec plus its files (already resolved by the caller: `localSource` for the
 * CLI, the Cloud Storage source for the function) into the one {@link BuildRequest} the engine
 * takes. `target` is the spec's target; `tags` are the extra tags (bare tags resolved against
 * the target's repository), deduplicated and without the target itself. The request pushes to
 * `[target, ...tags]`.
 */
export function specToRequest(
  spec: BuildSpec,
  files: EntrySource,
  opts: SpecRequestOptions = {},
): { request: BuildRequest; target: Reference; tags: Reference[] } {
  const target = parseReference(spec.target);
  const tags = resolveTags(target, spec.tags);
  const base = spec.base === 'scratch' ? 'scratch' : parseReference(spec.base);
  const mtime = opts.sourceDateEpoch ?? 0;
  if (!Number.isInteger(mtime) || mtime < 0) throw new InvalidSpecError('', `SOURCE_DATE_EPOCH must be a non-negative integer, got ${mtime}`);

  const config: { -readonly [K in keyof ConfigChanges]: ConfigChanges[K] } = {
    createdBy: opts.createdBy ?? 'artificer --spec',
  };
  if (spec.env) config.env = spec.env;
  if (spec.cmd) config.cmd = spec.cmd;
  if (spec.entrypoint) config.entrypoint = spec.entrypoint;
  if (spec.workdir) config.workdir = spec.workdir;
  if (spec.user) config.user = spec.user;
  if (spec.labels) config.labels = spec.labels;
  if (spec.ports) config.exposedPorts = spec.ports;

  const request: BuildRequest = {
    base,
    platforms: spec.platforms ?? 'default',
    files,
    layer: spec.owner ? { mtime, chown: spec.owner } : { mtime },
    config,
    annotations: spec.annotations ?? {},
    outputs: { registry: [target, ...tags] },
  };
  return { request, target, tags };
}
