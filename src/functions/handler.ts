/**
 * What the two Cloud Functions do, independent of the functions framework: an event in, one
 * build, one record, one log line out.
 *
 * Idempotent per spec generation: an event whose generation is no longer the live one, or
 * already has a record, does nothing. A user mistake is recorded as `failed` and the handler
 * returns (Eventarc would retry a throw forever); a temporary failure throws so Eventarc
 * retries, until the event is older than `maxEventAgeMs`, then it is recorded as `failed`. An
 * event that arrives already that old, whose generation carries a claim made since the event's
 * time by a run that wrote no record ({@link unfinishedClaim}), is settled without a build and
 * recorded as `failed` (a rebuild's record then says what the tags name, as any failed
 * rebuild's does): that attempt was killed by the platform (memory, timeout), which leaves no
 * record, or threw to be retried, and Eventarc would redeliver it for a day. Age alone is no
 * such evidence: a backlog (the instance limit, a base-image fan-out) delivers never-attempted
 * events that old, and they build as usual.
 *
 * Runs of one generation may overlap (an upload and a rebuild, two base updates, a redelivery
 * while the first delivery still runs): each run claims the generation before it reads anything
 * ({@link claimRun}), and moves a tag or writes the record only while the claim is still its own,
 * so the run that started last owns the tags and the record.
 */
import { randomUUID } from 'node:crypto';
import type { Bucket, Storage } from '@google-cloud/storage';
import { build } from '../build/build.ts';
import type { BuildResult } from '../build/request.ts';
import { AbortedError, ArtificerError, InvalidSpecError, RegistryError, TagsIncompleteError, TargetNotAllowedError } from '../errors.ts';
import { parseReference, repositoryName, type Reference } from '../reference/reference.ts';
import { RegistryClient } from '../registry/client.ts';
import type { CredentialProvider } from '../registry/types.ts';
import { LAYER_LIMITS } from '../layer/tar.ts';
import { MAX_SPEC_BYTES, parseSpecText, type BuildSpec } from '../spec/spec.ts';
import { resolveTags, specToRequest } from '../spec/request.ts';
import { isAllowedTarget, type FunctionConfig } from './config.ts';
import { isSpecObject, type RebuildMessage, type StorageObjectEvent } from './events.ts';
import { isTemporaryGcsError, MissingObjectError, pinGcsSource, storageError, UPLOAD_QUIET_MS, UploadInProgressError } from './gcs-source.ts';
import type { JsonLogger } from './logger.ts';
import { PublishError, type Publisher } from './pubsub.ts';
import {
  claimRun, claimValue, keptImage, layerInputs, markUntagged, readState, RECORD_KEYS, recordedLayer, recordError, tagsUnmovedSince, unfinishedClaim, writeRecord,
  type BuildRecord, type ObjectState, type RecordGuard, type WriteOutcome,
} from './record.ts';

export interface HandlerDeps {
  readonly storage: Storage;
  /** Where base-image updates queue their spec rebuilds. */
  readonly publisher: Publisher;
  readonly credentials: CredentialProvider;
  readonly config: FunctionConfig;
  readonly logger: JsonLogger;
  readonly now?: () => number;
}

export type Outcome = 'ignored' | 'superseded' | 'duplicate' | 'deleted' | 'succeeded' | 'failed' | 'queued';

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

/**
 * How long after its upload a spec whose files are not all in the bucket yet is retried rather
 * than recorded as failed: `gcloud storage cp -r` of a folder holding the spec uploads in no
 * particular order. Eventarc retries with a backoff from 10 s, so a few tries fit; a file that is
 * really missing (a typo) is recorded once this has passed.
 */
export const MISSING_FILE_GRACE_MS = 3 * 60_000;

/** True when the failure may go away on its own (registry 5xx/429, network, storage 503). */
export function isTemporary(err: unknown): boolean {
  if (err instanceof ArtificerError) return err.temporary;
  return isTemporaryGcsError(err);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Downloads and parses one generation of a spec. `size` is the generation's size from its
 * metadata: an oversized object is refused before a byte is downloaded (a spec is read whole,
 * and a mistaken upload of an artifact as `*.artificer.json` would otherwise fill the memory).
 */
async function readSpec(bucket: Bucket, name: string, generation: string, size: number): Promise<BuildSpec> {
  const url = `gs://${bucket.name}/${name}`;
  if (size > MAX_SPEC_BYTES) throw new InvalidSpecError(url, `is ${size} bytes; a spec may be at most ${MAX_SPEC_BYTES} bytes`);
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

/**
 * Thrown by the tag check when the generation being built is no longer the live one, or a later
 * run claimed it: the newer upload's event, or the later run, tags (and records), so this run
 * stops before moving another tag.
 */
class Superseded extends Error {
  readonly outcome: 'superseded' | 'deleted';
  constructor(outcome: 'superseded' | 'deleted', message: string) {
    super(message);
    this.outcome = outcome;
  }
}

/** The first error in `err`'s cause chain that is a {@link Superseded}. */
function supersededIn(err: unknown): Superseded | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof Superseded) return e;
  }
  return undefined;
}

/** True when a registry answered the request with a refusal (4xx but 408/429): it applied nothing. */
function refusedOutright(err: unknown): boolean {
  const e = err instanceof TagsIncompleteError ? err.cause : err;
  return e instanceof RegistryError && e.status !== undefined && e.status >= 400 && e.status < 500 && !e.temporary;
}

/** What a failed run's record says about the tags (see {@link BuildRecord}). */
type TagsAfter = Pick<Extract<BuildRecord, { status: 'failed' }>, 'digest' | 'image' | 'tags' | 'kept' | 'note'>;

/**
 * What the tags name after a failure, as far as it is known, for the record: the tags this run
 * moved and their image; else, when it moved none and no run did since the earlier record of
 * this generation, that record's image (kept); else nothing, and a note that says why.
 *
 * `sent`: tag requests this run sent, `lastSent` the last one's reference; one that failed moved
 * nothing only if the registry refused it outright (a lost answer or a 5xx may have been applied).
 * `before`: the object as this run claimed it (undefined: it failed before claiming).
 */
export function tagsAfterFailure(err: unknown, sent: number, lastSent: string | undefined, before: ObjectState | undefined, generation: string): TagsAfter {
  const moved = err instanceof TagsIncompleteError ? err.tagged : [];
  const unsure = sent > moved.length && !refusedOutright(err) ? lastSent : undefined;
  const earlier = before && keptImage(before, generation);
  const settled = before !== undefined && tagsUnmovedSince(before);
  const perhaps = unsure ? `, but perhaps ${unsure} (its request got no definite answer)` : '';
  // What the record before this run said the tags name: exactly the tags it lists (a failed
  // record lists only some), which is all that can be said of the others.
  const listed = earlier ? `${moved.length > 0 || unsure ? 'the other tags' : 'the tags'} recorded beside ${earlier.digest} at ${earlier.builtAt}` : '';
  let since = '';
  if (earlier && settled) since = `; ${listed} still name it`;
  else if (earlier) since = `; ${listed} named it then, and a run since that did not finish may have moved them`;
  else if (before && !settled && unfinishedClaim(before) !== undefined) since = '; a run before this one that did not finish may have moved tags';
  if (err instanceof TagsIncompleteError && moved.length > 0) {
    const image = `${repositoryName(parseReference(moved[0]!))}@${err.digest}`;
    return { digest: err.digest, image, tags: moved, note: `(the spec's other tags were not moved by this build${perhaps}${since})` };
  }
  if (!unsure && !since) return {};
  const note = `(no tag was moved by this build${perhaps}${since})`;
  return earlier && settled && !unsure ? { kept: earlier, note } : { note };
}

/** Builds one spec generation and records the outcome. Throws only for retryable failures. */
export async function runSpec(deps: HandlerDeps, run: SpecRun): Promise<Outcome> {
  const { config, logger } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const url = `gs://${run.bucket}/${run.name}`;
  /** This run's claim ({@link claimRun}, {@link claimValue}): in every log line, to tell overlapping runs apart. */
  const runId = claimValue(randomUUID(), started);
  const fields: Record<string, unknown> = { spec: url, generation: run.generation, trigger: run.trigger, run: runId };
  const bucket = deps.storage.bucket(run.bucket);
  const file = bucket.file(run.name);
  const done = (outcome: Outcome, severity: 'INFO' | 'WARNING' | 'ERROR' | 'DEBUG', msg: string, extra: Record<string, unknown> = {}): Outcome => {
    logger.log(severity, msg, { ...fields, outcome, durationMs: now() - started, ...extra });
    return outcome;
  };
  /**
   * Whether a failure is still worth an Eventarc retry (else it is recorded): a temporary one
   * until the event is `maxEventAgeMs` old, a file not uploaded yet for {@link MISSING_FILE_GRACE_MS}.
   */
  const retryable = (err: unknown): boolean => {
    const age = now() - run.time.getTime();
    return (isTemporary(err) && age < config.maxEventAgeMs) || (err instanceof MissingObjectError && age < MISSING_FILE_GRACE_MS);
  };
  /**
   * Writes the record; a write that keeps failing is logged, not thrown (a throw would make
   * Eventarc redeliver, and rebuild, for as long as the write fails), unless it is temporary and
   * the event young enough to retry.
   */
  let base: string | undefined; // the spec's, once read: every record from then on names it
  // The claim the record requires: the one seen when the object was read, then this run's own.
  let guard: RecordGuard | undefined;
  const record = async (rec: BuildRecord, unrecorded?: RecordGuard['unrecorded']): Promise<WriteOutcome | { readonly error: unknown }> => {
    try {
      return await writeRecord(file, run.generation, base === undefined ? rec : { ...rec, base }, guard && { ...guard, unrecorded });
    } catch (err) {
      if (retryable(err)) {
        done('failed', 'WARNING', `temporary failure writing the record, the event will be retried: ${message(err)}`, { retry: true });
        throw err;
      }
      return { error: err };
    }
  };

  let objectBytes = 0;
  /** Records a failure and says so in the event's line. */
  const fail = async (reason: string, tags: TagsAfter, code?: string, unrecorded?: RecordGuard['unrecorded']): Promise<Outcome> => {
    const written = await record({ status: 'failed', error: reason, ...tags }, unrecorded);
    const extra = { code, objectBytes, digest: tags.digest, tags: tags.tags, keptDigest: tags.kept?.digest };
    const text = recordError(reason, tags.note);
    if (typeof written === 'object') {
      return done('failed', 'ERROR', `build failed, and the record could not be written (${message(written.error)}): ${text}`, { ...extra, recorded: false });
    }
    return done(
      written === 'written' ? 'failed' : written,
      'ERROR',
      written === 'written' ? `build failed: ${text}` : `build failed, record not written (${written}): ${text}`,
      extra,
    );
  };

  let result: BuildResult | undefined;
  let tagging = false;
  /** The object as this run claimed it: the record before this run, and whether tags moved since. */
  let before: ObjectState | undefined;
  /** Tag requests this run sent (its checks passed), and the reference of the last one. */
  let sent = 0;
  let lastSent: string | undefined;
  let inputs = '';
  // A build that outlives the function is killed without a record; give up a little earlier
  // so the failure is recorded. The deadline stops a build only before its first tag (build()
  // finishes a tag set it has started), so an abandoned build has tagged nothing.
  const deadline = AbortSignal.timeout(config.buildTimeoutMs);
  try {
    const state = await readState(file);
    if (!state) return done('deleted', 'INFO', `${url} was deleted; nothing to build`);
    guard = { run: state.record[RECORD_KEYS.run] };
    if (state.generation !== run.generation) {
      return done('superseded', 'INFO', `${url} generation ${run.generation} was replaced by ${state.generation}; the newer upload builds`);
    }
    if (run.skipRecorded && state.record[RECORD_KEYS.generation] === run.generation && state.record[RECORD_KEYS.status]) {
      return done('duplicate', 'INFO', `${url} generation ${run.generation} already has a record (duplicate event)`, {
        status: state.record[RECORD_KEYS.status],
        digest: state.record[RECORD_KEYS.digest],
      });
    }

    // A run the platform killed (out of memory, a crash, the function's timeout) reaches no catch
    // block and writes no record: Eventarc redelivers its event for up to 24 h, and each delivery
    // is killed the same way. Past the age limit such an event is not built again but settled,
    // when its generation shows an attempt since the event's time that did not finish (a run
    // that threw to be retried leaves the same). An old event without one was never attempted
    // (a backlog), and builds.
    const age = now() - run.time.getTime();
    const attempt = unfinishedClaim(state);
    if (age >= config.maxEventAgeMs && attempt !== undefined && attempt >= run.time.getTime()) {
      const why =
        `earlier attempts since ${run.time.toISOString()} (the last started at ${new Date(attempt).toISOString()}) did not finish for longer than ARTIFICER_MAX_EVENT_AGE ` +
        `(${config.maxEventAgeMs / 1000} s; the event is ${Math.round(age / 1000)} s old): killed by timeout/memory, or failed for a reason worth retrying`;
      // No claim: this builds nothing. Written only if no run started since the read and no
      // record was written since (a run in progress then, which the read could not tell from a
      // killed one, records its own outcome: before this one, which is then not written, or
      // over it).
      const recorded = state.record[RECORD_KEYS.generation] === run.generation && Boolean(state.record[RECORD_KEYS.status]);
      // The killed attempt may have tagged before it died: the note says so, as any failure's does.
      if (!recorded) return await fail(why, tagsAfterFailure(undefined, 0, undefined, state, run.generation), undefined, { recordedAt: undefined });
      // A rebuild of a recorded generation: the attempts since that record failed, and may have
      // moved tags, so the record must not go on saying what it said (a platform reading
      // `succeeded` would take the spec as rebuilt on its new base). It says what the tags name
      // as any failed rebuild's does: the earlier image only if no run can have moved a tag since
      // (`artificer-run-untagged`), else none, and that an unfinished run may have moved them.
      // The spec of this generation is the one the earlier record read: its base still holds.
      base = state.record[RECORD_KEYS.base];
      const tags = tagsAfterFailure(undefined, 0, undefined, state, run.generation);
      return await fail(`not rebuilt: ${why}`, tags, undefined, { recordedAt: state.record[RECORD_KEYS.builtAt] });
    }

    const claimed = await claimRun(file, state, runId);
    if (claimed.outcome === 'deleted') return done('deleted', 'INFO', `${url} was deleted; nothing to build`);
    if (claimed.outcome === 'superseded') return done('superseded', 'INFO', `${url} generation ${run.generation} was replaced before the build started; the newer upload builds`);
    guard = { run: runId };
    before = claimed.before;

    const spec = await readSpec(bucket, run.name, run.generation, state.size);
    base = recordedBase(spec);
    const specTarget = parseReference(spec.target);
    checkAllowed([specTarget, ...resolveTags(specTarget, spec.tags)], config.allowedTargets);
    const pinned = await pinGcsSource({ bucket, specName: run.name, files: spec.files, signal: deadline });
    // An object created after the spec: the upload went on after its commit marker (cp -r of the
    // folder). Wait until it has been quiet for a while, then build what is there, re-pinned.
    // Only for the spec's own upload: by a rebuild, objects newer than the spec are the usual
    // case (artifacts replaced, the spec kept), and the spec marks no batch. Past the grace for
    // late files the wait ends: a late delivery may find an object created moments ago, and a
    // retry past the grace would record the wait as a failure (a never-quiet prefix, for good).
    const newest = pinned.newest;
    if (run.trigger === 'upload' && newest && newest.created > state.created) {
      const quiet = now() - newest.created;
      if (quiet < UPLOAD_QUIET_MS && now() - run.time.getTime() >= MISSING_FILE_GRACE_MS) {
        logger.warn(
          `gs://${run.bucket}/${newest.name} was created ${(quiet / 1000).toFixed(1)} s ago, after the spec: building the objects as they are now, without waiting ${UPLOAD_QUIET_MS / 1000} s for the upload to end (the event is past the ${MISSING_FILE_GRACE_MS / 1000} s grace for files uploaded after their spec)`,
          { ...fields, newest: newest.name },
        );
      } else if (quiet < UPLOAD_QUIET_MS) {
        throw new UploadInProgressError(
          `gs://${run.bucket}/${newest.name}`,
          `was created ${((newest.created - state.created) / 1000).toFixed(1)} s after the spec, ${(quiet / 1000).toFixed(1)} s ago: the upload is still in progress (upload the spec last: it is the commit marker); waiting for ${UPLOAD_QUIET_MS / 1000} s without a new object`,
        );
      }
      fields.uploadedAfterSpec = newest.name;
    }
    objectBytes = pinned.bytes;
    const { request: specRequest, target } = specToRequest(spec, pinned.source, {
      sourceDateEpoch: config.sourceDateEpoch,
      createdBy: `artificer cloud function (${url})`,
    });
    // The layer of the last successful build, if it was made of these very objects (a rebuild on a
    // new base, usually): the build takes it from the registry instead of reading them again.
    inputs = layerInputs(pinned.fingerprint, specRequest.layer);
    const knownLayer = recordedLayer(state.record, inputs);
    // A bucket writer controls the files: the layer's paths are bounded (LAYER_LIMITS).
    const request = { ...specRequest, layerLimits: LAYER_LIMITS, ...(knownLayer ? { knownLayer } : {}) };
    fields.target = target.toString();
    // The library's progress lines go out at DEBUG: the event's one INFO line is the summary.
    const libLogger = { debug: logger.debug, info: logger.debug, warn: logger.warn };
    const registry = new RegistryClient({
      credentials: deps.credentials,
      insecureRegistries: config.insecureRegistries,
      logger: libLogger,
      ...(config.registryRetryAttempts !== undefined ? { retry: { attempts: config.registryRetryAttempts } } : {}),
    });
    // Before each tag: is this still the newest upload, and still this run's claim? An older
    // build, or an earlier run of this generation (on the previous base, say), that finishes
    // after a newer one must not move the tags back (the newer one's record would then name an
    // image the tags no longer point at). What this cannot close: a PUT sent after this check
    // (its retries included) that the registry applies after a later run's tag of the same name.
    const beforeTag = async (ref: string): Promise<void> => {
      tagging = true;
      const live = await readState(file);
      if (!live) throw new Superseded('deleted', `${url} was deleted during the build; no tag was moved by this build after that`);
      if (live.generation !== run.generation) {
        throw new Superseded('superseded', `${url} generation ${run.generation} was replaced by ${live.generation} during the build; the newer upload tags`);
      }
      if (live.record[RECORD_KEYS.run] !== runId) {
        throw new Superseded('superseded', `${url} generation ${run.generation}: a later run (${live.record[RECORD_KEYS.run] ?? 'none'}) started during this build; it tags and records`);
      }
      sent++;
      lastSent = ref;
    };
    result = await build(request, { registry, logger: libLogger, signal: deadline, beforeTag });
  } catch (caught) {
    const superseded = supersededIn(caught);
    if (superseded) {
      const partial = caught instanceof TagsIncompleteError ? { tagged: caught.tagged, digest: caught.digest } : {};
      return done(superseded.outcome, 'INFO', superseded.message, partial);
    }
    const err =
      deadline.aborted && !tagging
        ? new AbortedError(`the build did not finish within ${config.buildTimeoutMs / 1000} s (ARTIFICER_BUILD_TIMEOUT); nothing was tagged`, { cause: caught })
        : caught;
    if (retryable(err)) {
      const why =
        err instanceof UploadInProgressError ? 'the spec\'s files are still being uploaded' : err instanceof MissingObjectError ? 'a file the spec names is not uploaded yet' : 'temporary failure';
      done('failed', 'WARNING', `${why}, the event will be retried: ${message(err)}`, { retry: true, eventAgeMs: now() - run.time.getTime() });
      // Leave word that this claim moved no tag, so that a later run that fails too can still
      // say which image the tags name (a retried rebuild that gives up, say).
      if (sent === 0 && guard?.run === runId && before && tagsUnmovedSince(before)) await markUntagged(file, run.generation, runId);
      throw err;
    }
    const age = now() - run.time.getTime();
    const reason = isTemporary(err) ? `gave up after retrying for ${Math.round(age / 1000)} s: ${message(err)}` : message(err);
    // Which tags this run moved, and what the others still name.
    return fail(reason, tagsAfterFailure(err, sent, lastSent, before, run.generation), err instanceof ArtificerError ? err.code : undefined);
  }

  const image = result.images[0] ?? '';
  const summary = { image, digest: result.digest, tags: result.tags, layerBytes: result.layerBytes, layerReused: result.layerReused, objectBytes: result.layerReused ? 0 : objectBytes };
  const written = await record({ status: 'succeeded', digest: result.digest, image, tags: result.tags, layer: { digests: result.layer, inputs } });
  if (typeof written === 'object') {
    return done('succeeded', 'ERROR', `built ${image}, but the record could not be written: ${message(written.error)}`, { ...summary, recorded: false });
  }
  if (written === 'written') return done('succeeded', 'INFO', `built ${image}`, summary);
  // superseded: a newer upload or a later run of this generation tags (over what this run tagged) and records.
  return done(written, 'INFO', `built ${image}; record not written (${written}: a newer upload or a later run of this generation records)`, summary);
}

/** `google.cloud.storage.object.v1.finalized`: build when a spec object was uploaded. */
export async function onObjectFinalized(deps: HandlerDeps, event: StorageObjectEvent): Promise<Outcome> {
  if (!isSpecObject(event.name)) {
    deps.logger.debug('not a spec object; ignored', { object: `gs://${event.bucket}/${event.name}` });
    return 'ignored';
  }
  return runSpec(deps, { ...event, skipRecorded: true, trigger: 'upload' });
}

/**
 * A spec's base as the record keeps it ({@link RECORD_KEYS.base}): the parsed reference in full
 * (`docker.io/library/busybox:1`), which {@link sameTag} compares with a notification's tag.
 */
function recordedBase(spec: BuildSpec): string {
  if (spec.base === 'scratch') return spec.base;
  try {
    return parseReference(spec.base).toString();
  } catch {
    return spec.base; // validated when the spec was parsed; kept verbatim if it ever is not
  }
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

/**
 * Every reference a spec pushes to, with bare extra tags resolved against its target the way
 * the build resolves them (`"base"` is `REGISTRY/REPO:base`, not `docker.io/library/base`);
 * undefined when the target does not parse (such a spec failed when it was uploaded).
 */
function outputsOf(spec: BuildSpec): string[] | undefined {
  try {
    const target = parseReference(spec.target);
    return [target, ...resolveTags(target, spec.tags)].map((r) => r.toString());
  } catch {
    return undefined;
  }
}

/** Spec objects read at once while a base-image fan-out looks for the affected ones. */
const FANOUT_READS = 8;
/** Objects per listing page while a base-image fan-out looks for specs (the API's most). */
const FANOUT_PAGE = 1000;
/**
 * `matchGlob` for spec objects: `**` matches any characters, `/` included
 * (https://cloud.google.com/storage/docs/json_api/v1/objects/list#list-objects-and-prefixes-using-glob),
 * so this takes `artificer.json` and `*.artificer.json` in any folder (and a few non-specs such as
 * `xartificer.json`, which {@link isSpecObject} drops).
 */
const SPEC_GLOB = '**artificer.json';

/** A listed object's generation and custom metadata (objects.list returns both; no extra request). */
interface Listed {
  readonly name: string;
  readonly generation: string;
  readonly custom: Readonly<Record<string, unknown>>;
}

/**
 * `google.cloud.pubsub.topic.v1.messagePublished`: rebuild one spec, or queue a rebuild of every
 * spec on an updated base image.
 *
 * A base-image update does not build anything itself: it finds the specs on that base and
 * publishes one `{bucket, object, base}` message per spec to `ARTIFICER_REBUILD_TOPIC`, so each
 * spec builds in its own invocation, with its own deadline, retries and record (one function
 * call building them in turn would outlive its timeout with a few slow specs, and a retry of
 * the message would build them all again). A spec that cannot be read is skipped and logged;
 * a temporary failure makes the message come back once the others are queued (a spec queued
 * twice builds the same digest twice).
 */
export async function onRebuildMessage(deps: HandlerDeps, msg: RebuildMessage): Promise<Outcome[]> {
  const { logger } = deps;
  const age = (): number => (deps.now ?? Date.now)() - msg.time.getTime();
  /** A temporary failure is thrown (Pub/Sub redelivers) until the message is `maxEventAgeMs` old; then false: log it and acknowledge. */
  const retry = (err: unknown): boolean => isTemporary(err) && age() < deps.config.maxEventAgeMs;
  const gaveUp = (err: unknown): string => (isTemporary(err) ? `gave up after retrying for ${Math.round(age() / 1000)} s: ${message(err)}` : message(err));
  if (msg.kind === 'ignored') {
    logger.warn(`rebuild message ignored: ${msg.reason}`);
    return [];
  }
  if (msg.kind === 'spec') {
    const url = `gs://${msg.bucket}/${msg.object}`;
    let state;
    try {
      state = await readState(deps.storage.bucket(msg.bucket).file(msg.object));
    } catch (err) {
      if (retry(err)) throw err;
      // Not ours to read (another bucket, no permission): retrying will not change that.
      logger.error(`rebuild of ${url}: ${gaveUp(err)}`, { spec: url, trigger: 'rebuild' });
      return ['failed'];
    }
    if (!state) {
      logger.warn(`rebuild of ${url}: no such object`);
      return ['deleted'];
    }
    const trigger = msg.base ? 'base-update' : 'rebuild';
    return [await runSpec(deps, { bucket: msg.bucket, name: msg.object, generation: state.generation, time: msg.time, skipRecorded: false, trigger })];
  }
  const { rebuild: where, rebuildTopic: topic } = deps.config;
  if (!where || !topic) {
    logger.warn(`base image ${msg.tag} changed, but ${!where ? 'ARTIFICER_REBUILD_PREFIX' : 'ARTIFICER_REBUILD_TOPIC'} is not set; nothing rebuilt`);
    return [];
  }
  const bucket = deps.storage.bucket(where.bucket);
  const affected: string[] = [];
  let unreadable: unknown;
  let read = 0;
  let passed = 0;
  const check = async ({ name, generation, custom }: Listed): Promise<void> => {
    // The live generation's record names its base: a spec on another base is not downloaded.
    const recorded = custom[RECORD_KEYS.base];
    if (custom[RECORD_KEYS.generation] === generation && typeof recorded === 'string' && !sameTag(recorded, msg.tag)) {
      passed++;
      return;
    }
    read++;
    try {
      const state = await readState(bucket.file(name));
      if (!state) return;
      const spec = await readSpec(bucket, name, state.generation, state.size);
      if (!sameTag(spec.base, msg.tag)) return;
      // Our own push lands on the same topic: a spec whose output is the updated tag must not loop.
      const outputs = outputsOf(spec);
      if (outputs === undefined || outputs.some((t) => sameTag(t, msg.tag))) return;
      affected.push(name);
    } catch (err) {
      if (isTemporary(err)) unreadable ??= err;
      // A broken spec was recorded as failed when it was uploaded; it cannot say what its base is.
      else logger.warn(`base image ${msg.tag} changed: skipping gs://${where.bucket}/${name}: ${message(err)}`, { base: msg.tag });
    }
  };
  // Page by page: a prefix may hold many specs (and, without matchGlob, all their artifacts).
  // fake-gcs-server v1.55.1 ignores matchGlob (it lists every object), so the names are filtered
  // here as well.
  let query: Record<string, unknown> | null = { prefix: where.prefix, matchGlob: SPEC_GLOB, autoPaginate: false, maxResults: FANOUT_PAGE };
  while (query) {
    let page: Listed[];
    try {
      const [files, next] = (await bucket.getFiles(query)) as unknown as [Array<{ name: string; metadata: Record<string, unknown> }>, Record<string, unknown> | null | undefined];
      page = files
        .filter((f) => isSpecObject(f.name))
        .map((f) => ({ name: f.name, generation: String(f.metadata.generation), custom: (f.metadata.metadata ?? {}) as Record<string, unknown> }));
      query = next ?? null;
    } catch (err) {
      const e = storageError(err, `gs://${where.bucket}/${where.prefix}`, 'listing specs to rebuild');
      if (retry(e)) throw e;
      // Specs of the pages before are not queued either: the notification is dropped whole.
      logger.error(`base image ${msg.tag} changed, but the specs cannot be listed: ${gaveUp(e)}`, { base: msg.tag });
      return [];
    }
    for (let next = 0; next < page.length; ) {
      const batch = page.slice(next, (next += FANOUT_READS));
      await Promise.all(batch.map(check));
    }
  }
  affected.sort();

  if (affected.length) {
    try {
      await deps.publisher.publish(
        topic,
        affected.map((object) => ({ bucket: where.bucket, object, base: msg.tag })),
      );
    } catch (err) {
      if (retry(err)) throw err;
      // Batches before the failing one went out: those specs are queued, the rest are not.
      const queued = err instanceof PublishError ? err.published : 0;
      logger.error(`base image ${msg.tag} changed, but ${affected.length - queued} rebuild(s) could not be queued on ${topic}: ${gaveUp(err)}`, {
        base: msg.tag,
        specs: affected.slice(queued),
        queued: affected.slice(0, queued),
      });
      return affected.map((_, i) => (i < queued ? 'queued' : 'failed'));
    }
  }
  // specsRead: specs downloaded to learn their base; specsPassed: skipped on their record's base.
  logger.info(`base image ${msg.tag} changed: queued ${affected.length} spec rebuild(s) on ${topic}`, { base: msg.tag, specs: affected, specsRead: read, specsPassed: passed });
  if (unreadable !== undefined) {
    // Redelivered until the message is too old (each delivery queues the readable specs again,
    // which rebuild to the same digests); then the unreadable ones are given up on, and said so.
    if (retry(unreadable)) throw unreadable;
    logger.error(`base image ${msg.tag} changed: gave up on specs that could not be read for ${Math.round(age() / 1000)} s: ${message(unreadable)}`, { base: msg.tag });
  }
  return affected.map(() => 'queued');
}

export { recordError };
