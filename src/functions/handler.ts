/**
 * What the two Cloud Functions do, independent of the functions framework: an event in, one
 * build, one record, one log line out.
 *
 * Idempotent per spec generation: an event whose generation is no longer the live one, or
 * already has a record, does nothing. A user mistake is recorded as `failed` and the handler
 * returns (Eventarc would retry a throw forever); a temporary failure throws so Eventarc
 * retries, until the event is older than `maxEventAgeMs`, then it is recorded as `failed`.
 */
import type { Bucket, Storage } from '@google-cloud/storage';
import { build } from '../build/build.ts';
import type { BuildResult } from '../build/request.ts';
import { AbortedError, ArtificerError, TargetNotAllowedError } from '../errors.ts';
import { parseReference, repositoryName, type Reference } from '../reference/reference.ts';
import { RegistryClient } from '../registry/client.ts';
import type { CredentialProvider } from '../registry/types.ts';
import { parseSpecText, type BuildSpec } from '../spec/spec.ts';
import { resolveTags, specToRequest } from '../spec/request.ts';
import { isAllowedTarget, type FunctionConfig } from './config.ts';
import { isSpecObject, type RebuildMessage, type StorageObjectEvent } from './events.ts';
import { isTemporaryGcsError, pinGcsSource, storageError } from './gcs-source.ts';
import type { JsonLogger } from './logger.ts';
import { readState, RECORD_KEYS, recordError, writeRecord } from './record.ts';

export interface HandlerDeps {
  readonly storage: Storage;
  readonly credentials: CredentialProvider;
  readonly config: FunctionConfig;
  readonly logger: JsonLogger;
  readonly now?: () => number;
}

export type Outcome = 'ignored' | 'superseded' | 'duplicate' | 'deleted' | 'succeeded' | 'failed';

export interface SpecRun {
  readonly bucket: string;
  readonly name: string;
  /** The generation to build; for rebuilds, the live one. */
  readonly generation: string;
  readonly time: Date;
  /** Event builds skip a generation that already has a record; rebuilds do not. */
  readonly skipRecorded: boolean;
  readonly trigger: 'upload' | 'rebuild' | 'base-update';
}

/** True when the failure may go away on its own (registry 5xx/429, network, storage 503). */
export function isTemporary(err: unknown): boolean {
  if (err instanceof ArtificerError) return err.temporary;
  return isTemporaryGcsError(err);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function readSpec(bucket: Bucket, name: string, generation: string): Promise<BuildSpec> {
  const url = `gs://${bucket.name}/${name}`;
  let bytes: Buffer;
  try {
    [bytes] = await bucket.file(name, { generation }).download();
  } catch (err) {
    throw storageError(err, url, 'reading the spec');
  }
  return parseSpecText(bytes, url);
}

function checkAllowed(targets: readonly Reference[], allowed: readonly string[]): void {
  for (const ref of targets) {
    const repo = repositoryName(ref);
    if (!isAllowedTarget(repo, allowed)) {
      throw new TargetNotAllowedError(
        repo,
        allowed.length === 0
          ? `target ${repo} is not allowed: ARTIFICER_ALLOWED_TARGETS is empty, so this function pushes nowhere`
          : `target ${repo} is not in ARTIFICER_ALLOWED_TARGETS (${allowed.join(', ')})`,
      );
    }
  }
}

/** Builds one spec generation and records the outcome. Throws only for retryable failures. */
export async function runSpec(deps: HandlerDeps, run: SpecRun): Promise<Outcome> {
  const { config, logger } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const url = `gs://${run.bucket}/${run.name}`;
  const fields: Record<string, unknown> = { spec: url, generation: run.generation, trigger: run.trigger };
  const bucket = deps.storage.bucket(run.bucket);
  const file = bucket.file(run.name);
  const done = (outcome: Outcome, severity: 'INFO' | 'WARNING' | 'ERROR' | 'DEBUG', msg: string, extra: Record<string, unknown> = {}): Outcome => {
    logger.log(severity, msg, { ...fields, outcome, durationMs: now() - started, ...extra });
    return outcome;
  };

  let result: BuildResult | undefined;
  let objectBytes = 0;
  // A build that outlives the function is killed without a record; give up a little earlier
  // so the failure is recorded. Tags are pushed last, so an abandoned build leaves none.
  const deadline = AbortSignal.timeout(config.buildTimeoutMs);
  try {
    const state = await readState(file);
    if (!state) return done('deleted', 'INFO', `${url} was deleted; nothing to build`);
    if (state.generation !== run.generation) {
      return done('superseded', 'INFO', `${url} generation ${run.generation} was replaced by ${state.generation}; the newer upload builds`);
    }
    if (run.skipRecorded && state.record[RECORD_KEYS.generation] === run.generation && state.record[RECORD_KEYS.status]) {
      return done('duplicate', 'INFO', `${url} generation ${run.generation} already has a record (duplicate event)`, {
        status: state.record[RECORD_KEYS.status],
        digest: state.record[RECORD_KEYS.digest],
      });
    }

    const spec = await readSpec(bucket, run.name, run.generation);
    const specTarget = parseReference(spec.target);
    checkAllowed([specTarget, ...resolveTags(specTarget, spec.tags)], config.allowedTargets);
    const pinned = await pinGcsSource({ bucket, specName: run.name, files: spec.files, signal: deadline });
    objectBytes = pinned.bytes;
    const { request, target } = specToRequest(spec, pinned.source, {
      sourceDateEpoch: config.sourceDateEpoch,
      createdBy: `artificer cloud function (${url}#${run.generation})`,
    });
    fields.target = target.toString();
    // The library's progress lines go out at DEBUG: the event's one INFO line is the summary.
    const libLogger = { debug: logger.debug, info: logger.debug, warn: logger.warn };
    const registry = new RegistryClient({
      credentials: deps.credentials,
      insecureRegistries: config.insecureRegistries,
      logger: libLogger,
      ...(config.registryRetryAttempts !== undefined ? { retry: { attempts: config.registryRetryAttempts } } : {}),
    });
    result = await build(request, { registry, logger: libLogger, signal: deadline });
  } catch (caught) {
    const err = deadline.aborted
      ? new AbortedError(`the build did not finish within ${config.buildTimeoutMs / 1000} s (ARTIFICER_BUILD_TIMEOUT); nothing was tagged`, { cause: caught })
      : caught;
    const age = now() - run.time.getTime();
    if (isTemporary(err) && age < config.maxEventAgeMs) {
      done('failed', 'WARNING', `temporary failure, the event will be retried: ${message(err)}`, { retry: true, eventAgeMs: age });
      throw err;
    }
    const reason = isTemporary(err) ? `gave up after retrying for ${Math.round(age / 1000)} s: ${message(err)}` : message(err);
    const outcome = await writeRecord(file, run.generation, { status: 'failed', error: reason });
    return done(
      outcome === 'written' ? 'failed' : outcome,
      'ERROR',
      outcome === 'written' ? `build failed: ${recordError(reason)}` : `build failed, record not written (${outcome}): ${recordError(reason)}`,
      { code: err instanceof ArtificerError ? err.code : undefined, objectBytes },
    );
  }

  const image = result.images[0] ?? '';
  const outcome = await writeRecord(file, run.generation, {
    status: 'succeeded',
    digest: result.digest,
    image,
    tags: result.tags,
  });
  return done(outcome === 'written' ? 'succeeded' : outcome, 'INFO', outcome === 'written' ? `built ${image}` : `built ${image}; record not written (${outcome})`, {
    image,
    digest: result.digest,
    tags: result.tags,
    layerBytes: result.layerBytes,
    objectBytes,
  });
}

/** `google.cloud.storage.object.v1.finalized`: build when a spec object was uploaded. */
export async function onObjectFinalized(deps: HandlerDeps, event: StorageObjectEvent): Promise<Outcome> {
  if (!isSpecObject(event.name)) {
    deps.logger.debug('not a spec object; ignored', { object: `gs://${event.bucket}/${event.name}` });
    return 'ignored';
  }
  return runSpec(deps, { ...event, skipRecorded: true, trigger: 'upload' });
}

/** Whether a spec's base names the same repository and tag as an Artifact Registry notification. */
function sameTag(a: string, b: string): boolean {
  try {
    const x = parseReference(a);
    const y = parseReference(b);
    return x.registry === y.registry && x.repository === y.repository && x.tag === y.tag && x.digest === undefined;
  } catch {
    return false;
  }
}

/** `google.cloud.pubsub.topic.v1.messagePublished`: rebuild one spec, or every spec on an updated base. */
export async function onRebuildMessage(deps: HandlerDeps, msg: RebuildMessage): Promise<Outcome[]> {
  const { logger } = deps;
  if (msg.kind === 'ignored') {
    logger.warn(`rebuild message ignored: ${msg.reason}`);
    return [];
  }
  if (msg.kind === 'spec') {
    const state = await readState(deps.storage.bucket(msg.bucket).file(msg.object));
    if (!state) {
      logger.warn(`rebuild of gs://${msg.bucket}/${msg.object}: no such object`);
      return ['deleted'];
    }
    return [await runSpec(deps, { bucket: msg.bucket, name: msg.object, generation: state.generation, time: msg.time, skipRecorded: false, trigger: 'rebuild' })];
  }
  const where = deps.config.rebuild;
  if (!where) {
    logger.warn(`base image ${msg.tag} changed, but ARTIFICER_REBUILD_PREFIX is not set; nothing rebuilt`);
    return [];
  }
  const bucket = deps.storage.bucket(where.bucket);
  let names: string[];
  try {
    const [files] = await bucket.getFiles({ prefix: where.prefix, autoPaginate: true });
    names = files.filter((f) => isSpecObject(f.name)).map((f) => f.name);
  } catch (err) {
    throw storageError(err, `gs://${where.bucket}/${where.prefix}`, 'listing specs to rebuild');
  }
  const outcomes: Outcome[] = [];
  let retry: unknown;
  for (const name of names) {
    try {
      const state = await readState(bucket.file(name));
      if (!state) continue;
      let spec: BuildSpec;
      try {
        spec = await readSpec(bucket, name, state.generation);
      } catch (err) {
        if (isTemporary(err)) throw err;
        continue; // a broken spec was recorded as failed when it was uploaded
      }
      if (!sameTag(spec.base, msg.tag)) continue;
      // Our own push lands on the same topic: a spec whose output is the updated tag must not loop.
      if ([spec.target, ...spec.tags].some((t) => sameTag(t, msg.tag))) continue;
      outcomes.push(
        await runSpec(deps, { bucket: where.bucket, name, generation: state.generation, time: msg.time, skipRecorded: false, trigger: 'base-update' }),
      );
    } catch (err) {
      if (!isTemporary(err)) throw err;
      retry ??= err; // try every spec, then let Eventarc retry the message
    }
  }
  logger.info(`base image ${msg.tag} changed: rebuilt ${outcomes.length} spec(s)`, { base: msg.tag, outcomes });
  if (retry !== undefined) throw retry;
  return outcomes;
}

export { recordError };
