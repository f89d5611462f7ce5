/**
 * The build record: custom metadata on the spec object, written when a build ends.
 *
 * - Written only after the manifest push (the caller passes a finished result).
 * - Describes the newest generation: before writing, the object's current generation is read;
 *   if it is not the one built, a newer upload exists and its own event writes the record, so
 *   this (stale) run writes nothing.
 * - Written by the run that claimed the generation last ({@link claimRun}): two runs of one
 *   generation (an upload and a rebuild, two base updates) may overlap, and only the one that
 *   started last moves tags and records; an earlier one stops as `superseded`.
 * - The patch carries `ifGenerationMatch` + `ifMetagenerationMatch` (the values just read), so
 *   a concurrent upload, claim or record write makes it fail with 412 instead of clobbering;
 *   it is then re-read (claim included) and retried.
 *
 * Emulator caveat: fake-gcs-server v1.55.1 ignores both preconditions on metadata PATCH and does
 * not bump the metageneration, so locally only the generation check is exercised.
 */
import { createHash } from 'node:crypto';
import type { File } from '@google-cloud/storage';
import type { LayerPolicy } from '../build/request.ts';
import { LAYER_FORMAT, type LayerDigests } from '../layer/layer.ts';
import type { Digest } from '../oci/types.ts';
import type { PinnedSource } from './gcs-source.ts';
import { redactSecrets } from './logger.ts';
import { gcsStatus, storageError } from './gcs-source.ts';

export const RECORD_KEYS = {
  status: 'artificer-status',
  digest: 'artificer-digest',
  image: 'artificer-image',
  tags: 'artificer-tags',
  tagsOmitted: 'artificer-tags-omitted',
  error: 'artificer-error',
  generation: 'artificer-generation',
  builtAt: 'artificer-built-at',
  layer: 'artificer-layer',
  layerDiffId: 'artificer-layer-diffid',
  layerSize: 'artificer-layer-size',
  layerInputs: 'artificer-layer-inputs',
  /**
   * The spec's base as parsed (`registry/repository:tag`, `@digest` if pinned; `scratch`): lets
   * the base-image fan-out pass over a spec on another base without downloading it. Written
   * beside every record made once the spec was read.
   */
  base: 'artificer-base',
  /**
   * The claim: `<uuid>@<ms>`, the id of the last run that started on this generation
   * ({@link claimRun}) and when it started ({@link claimValue}). Not part of the outcome: while a
   * run is in progress it names that run, and the other keys still describe the last run that
   * finished.
   */
  run: 'artificer-run',
  /**
   * A run's claim ({@link RECORD_KEYS.run}) vouching that no tag was moved since the record: set
   * by a run that threw to be retried before it sent a tag, when no tag had been moved since the
   * record before it claimed either ({@link markUntagged}). Valid only while it equals the claim;
   * every record removes it. What lets a rebuild that gives up after retrying keep the earlier
   * image in its record ({@link keptImage}).
   */
  untagged: 'artificer-run-untagged',
} as const;

/**
 * Cloud Storage's limit on an object's custom metadata: 8 KiB for all keys and values together,
 * counted in bytes (https://cloud.google.com/storage/quotas, "Objects"; the storage.v1 RPC
 * reference's ServiceConstants also name 4 KiB per value). A record over it is refused (400), so
 * every field is bounded in UTF-8 bytes and the whole record stays within {@link MAX_RECORD_BYTES}.
 */
export const CUSTOM_METADATA_LIMIT_BYTES = 8 * 1024;
/**
 * Most a record's keys and values take, in UTF-8 bytes: half of {@link CUSTOM_METADATA_LIMIT_BYTES},
 * leaving the rest to the object's other metadata (gcloud's `goog-reserved-*`, the uploader's).
 */
export const MAX_RECORD_BYTES = 4 * 1024;
/** Longest `artificer-error` value, in UTF-8 bytes. */
export const MAX_ERROR_BYTES = 1024;
/**
 * Longest `artificer-error` value of a failed record that names an image (the earlier one kept,
 * or the one some tags were moved to), in UTF-8 bytes: the image and its layer take the rest of
 * {@link MAX_RECORD_BYTES}.
 */
export const MAX_ERROR_WITH_IMAGE_BYTES = 600;
/** Longest `artificer-base` value, in bytes; a longer one is left out (the fan-out then reads the spec). */
export const MAX_BASE_BYTES = 512;
/** Longest `artificer-image` a kept record carries over: a name (255), `@`, a digest (71). */
const MAX_IMAGE_BYTES = 255 + 1 + 71;

/** The new layer of a successful build, and what it was made of (see {@link recordedLayer}). */
export interface RecordedLayer {
  readonly digests: LayerDigests;
  /** {@link layerInputs} of the build that made it. */
  readonly inputs: string;
}

/**
 * The image an earlier record of the same generation names, as that record wrote it: kept by a
 * failed run that moved no tag ({@link keptImage}), since the tags still name it. Its fields are
 * the record's values, checked for form (metadata anyone with write access to the bucket can edit).
 */
export interface KeptImage {
  readonly digest: string;
  readonly image?: string;
  /** `artificer-tags` as recorded (whole references, comma-separated, already bounded). */
  readonly tags?: string;
  readonly tagsOmitted?: string;
  /** The four layer fields, as recorded; only when all are well formed. */
  readonly layer?: { readonly digest: string; readonly diffId: string; readonly size: string; readonly inputs: string };
  readonly base?: string;
  /** `artificer-built-at` of that record: when the tags were last known to name it. */
  readonly builtAt: string;
}

/** `base`: the spec's base ({@link RECORD_KEYS.base}), once the spec was read. */
export type BuildRecord =
  | { readonly status: 'succeeded'; readonly digest: string; readonly image: string; readonly tags: readonly string[]; readonly layer?: RecordedLayer; readonly base?: string }
  /**
   * `digest`, `image` and `tags` when some tags were moved before the failure: exactly those,
   * and the image they name now. `kept` when no tag was moved by this run, nor by any run since
   * the earlier record of this generation: that record's image, which the tags still name.
   * `note` follows `error` and is never cut (it says what the tags name).
   */
  | {
      readonly status: 'failed';
      readonly error: string;
      readonly note?: string;
      readonly digest?: string;
      readonly image?: string;
      readonly tags?: readonly string[];
      readonly kept?: KeptImage;
      readonly base?: string;
    };

export interface ObjectState {
  readonly generation: string;
  readonly metageneration: string;
  /** Byte length of the live generation. */
  readonly size: number;
  /** When the live generation was created (ms since the epoch; NaN if Cloud Storage did not say). */
  readonly created: number;
  /** The record's fields currently on the object (artificer-* keys). */
  readonly record: Readonly<Record<string, string>>;
}

/**
 * Longest `artificer-tags` value, in UTF-8 bytes (see {@link CUSTOM_METADATA_LIMIT_BYTES}); a
 * spec may name any number of tags.
 */
export const MAX_TAGS_BYTES = 2048;

/**
 * The record's tag fields: as many whole tags as fit in {@link MAX_TAGS_BYTES} bytes,
 * comma-separated, and how many did not fit (never a cut-off reference).
 */
export function recordTags(tags: readonly string[]): { tags: string; omitted: number } {
  let value = '';
  let kept = 0;
  for (const tag of tags) {
    const next = kept === 0 ? tag : `${value},${tag}`;
    if (Buffer.byteLength(next) > MAX_TAGS_BYTES) break;
    value = next;
    kept++;
  }
  return { tags: value, omitted: tags.length - kept };
}

/**
 * What a layer is made of, as one value to compare: the source's fingerprint (every object and
 * generation it reads, {@link PinnedSource.fingerprint}), the policy applied to the entries, and
 * {@link LAYER_FORMAT}. sha256, hex.
 */
export function layerInputs(sourceFingerprint: string, policy: LayerPolicy): string {
  const canonical = { format: LAYER_FORMAT, source: sourceFingerprint, mtime: policy.mtime, chown: policy.chown ?? null, keepSpecialBits: policy.keepSpecialBits ?? false };
  return createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * The layer a succeeded record names (or a failed one that keeps the earlier image, with the layer
 * that image was pushed with), when it was made of exactly `inputs`; undefined when the record
 * names no such image, was made of something else, or its layer fields are not well formed
 * (metadata anyone with write access to the bucket can edit). A failed record never names a layer
 * its own run made.
 */
export function recordedLayer(record: Readonly<Record<string, string>>, inputs: string): LayerDigests | undefined {
  // A failed record carries a layer only when it keeps the earlier image, pushed with that layer.
  if (!(record[RECORD_KEYS.status] === 'succeeded' || (record[RECORD_KEYS.status] === 'failed' && record[RECORD_KEYS.digest])) || record[RECORD_KEYS.layerInputs] !== inputs) return undefined;
  const digest = record[RECORD_KEYS.layer];
  const diffId = record[RECORD_KEYS.layerDiffId];
  const sizeText = record[RECORD_KEYS.layerSize];
  if (!digest || !diffId || !sizeText || !DIGEST.test(digest) || !DIGEST.test(diffId) || !/^[0-9]{1,15}$/.test(sizeText)) return undefined;
  return { digest: digest as Digest, diffId: diffId as Digest, size: Number(sizeText) };
}

/**
 * `s` cut to at most `max` UTF-8 bytes, ending in `…` when cut; never half a character (a cut
 * is moved back to the start of the character it would split, surrogate pairs included).
 */
export function truncateUtf8(s: string, max: number): string {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length <= max) return s;
  let end = max - Buffer.byteLength('…');
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // a continuation byte: back to its lead
  return `${bytes.subarray(0, end).toString('utf8')}…`;
}

function oneLine(text: string): string {
  return redactSecrets(text).replace(/\s+/g, ' ').trim();
}

/** Least a record's error message keeps of its own when a note follows it ({@link recordError}). */
const MIN_MESSAGE_BYTES = 200;

/**
 * A bounded (`max` bytes, {@link MAX_ERROR_BYTES} by default), credential-free, one-line error
 * message for the record. `note` follows the message, and the message is cut first to leave it
 * room (down to {@link MIN_MESSAGE_BYTES}): it says what the tags name, which a long registry
 * error must not push out.
 */
export function recordError(message: string, note = '', max = MAX_ERROR_BYTES): string {
  const tail = note ? truncateUtf8(` ${oneLine(note)}`, max - MIN_MESSAGE_BYTES) : '';
  return `${truncateUtf8(oneLine(message), max - Buffer.byteLength(tail))}${tail}`;
}

/** Bytes Cloud Storage counts for custom metadata: every key and value, UTF-8 (a null deletes, and counts nothing). */
export function metadataBytes(fields: Readonly<Record<string, string | null>>): number {
  let n = 0;
  for (const [k, v] of Object.entries(fields)) if (v !== null) n += Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}

/** The live object's generation, metageneration and record; undefined when it was deleted. */
export async function readState(file: File): Promise<ObjectState | undefined> {
  let md: Record<string, unknown>;
  try {
    [md] = (await file.getMetadata()) as unknown as [Record<string, unknown>];
  } catch (err) {
    if (gcsStatus(err) === 404) return undefined;
    throw storageError(err, `gs://${file.bucket.name}/${file.name}`, 'reading the spec object metadata');
  }
  const custom = (md.metadata ?? {}) as Record<string, unknown>;
  const record: Record<string, string> = {};
  for (const key of Object.values(RECORD_KEYS)) {
    const v = custom[key];
    if (typeof v === 'string') record[key] = v;
  }
  return { generation: String(md.generation), metageneration: String(md.metageneration), size: Number(md.size ?? 0), created: Date.parse(String(md.timeCreated ?? '')), record };
}

/**
 * A run's claim ({@link RECORD_KEYS.run}): its id and its start (ms since the epoch), so that a
 * later delivery can tell that an attempt started and did not finish ({@link unfinishedClaim}).
 */
export function claimValue(id: string, startedMs: number): string {
  return `${id}@${Math.floor(startedMs)}`;
}

/** When the run that made `claim` ({@link claimValue}) started; undefined for a claim without a start. */
function claimStart(claim: string | undefined): number | undefined {
  const m = /@([0-9]{1,15})$/.exec(claim ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * When the attempt that made `state`'s claim started, if it is unfinished: the claim was made on
 * this generation (it started no earlier than the generation was created; a copy or rewrite
 * keeps the custom metadata of the object it came from, claim included) and no record was
 * written since it started (every outcome but a retryable throw, a platform kill, or a run still
 * in progress writes one). Undefined when there is no such claim, or it has no start (a claim
 * written before claims carried one).
 */
export function unfinishedClaim(state: ObjectState): number | undefined {
  const started = claimStart(state.record[RECORD_KEYS.run]);
  if (started === undefined) return undefined;
  if (!(started >= state.created)) return undefined; // NaN (no creation time) included: no evidence
  const builtAt = Date.parse(state.record[RECORD_KEYS.builtAt] ?? '');
  return builtAt >= started ? undefined : started;
}

export type ClaimOutcome = 'claimed' | 'superseded' | 'deleted';

/**
 * Whether no tag can have been moved since `state`'s record: no run claimed since it was written
 * (the claim is the one of the run that wrote it, or there is none), or every run that did ended
 * without sending a tag ({@link RECORD_KEYS.untagged} vouches for the current claim). A claim
 * with no record since may belong to a run that tagged and then was killed, threw to be
 * retried (a tag refused half-way, a record write that failed), or was superseded after tagging;
 * a claim without a start (written before claims carried one) cannot be placed: both count as
 * "may have moved".
 */
export function tagsUnmovedSince(state: ObjectState): boolean {
  const claim = state.record[RECORD_KEYS.run];
  if (claim === undefined) return true;
  if (state.record[RECORD_KEYS.untagged] === claim) return true;
  const started = claimStart(claim);
  return started !== undefined && Date.parse(state.record[RECORD_KEYS.builtAt] ?? '') >= started;
}

/**
 * The image `state`'s record names, when that record is of `generation` (a copy or rewrite keeps
 * an older upload's record, which says nothing of this one) and names a well-formed digest; see
 * {@link KeptImage}. Whether the tags still name it is {@link tagsUnmovedSince}'s question.
 */
export function keptImage(state: ObjectState, generation: string): KeptImage | undefined {
  const r = state.record;
  const digest = r[RECORD_KEYS.digest];
  if (r[RECORD_KEYS.generation] !== generation || !r[RECORD_KEYS.status] || !digest || !DIGEST.test(digest)) return undefined;
  const image = r[RECORD_KEYS.image];
  const tags = r[RECORD_KEYS.tags];
  const omitted = r[RECORD_KEYS.tagsOmitted];
  const base = r[RECORD_KEYS.base];
  const [layer, diffId, size, inputs] = [r[RECORD_KEYS.layer], r[RECORD_KEYS.layerDiffId], r[RECORD_KEYS.layerSize], r[RECORD_KEYS.layerInputs]];
  const layerOk = layer && diffId && size && inputs && DIGEST.test(layer) && DIGEST.test(diffId) && /^[0-9]{1,15}$/.test(size) && /^[0-9a-f]{64}$/.test(inputs);
  return {
    digest,
    ...(image && image.endsWith(`@${digest}`) && Buffer.byteLength(image) <= MAX_IMAGE_BYTES ? { image } : {}),
    ...(tags && Buffer.byteLength(tags) <= MAX_TAGS_BYTES ? { tags } : {}),
    ...(omitted && /^[0-9]{1,6}$/.test(omitted) ? { tagsOmitted: omitted } : {}),
    ...(layerOk ? { layer: { digest: layer, diffId, size, inputs } } : {}),
    ...(base && Buffer.byteLength(base) <= MAX_BASE_BYTES ? { base } : {}),
    builtAt: r[RECORD_KEYS.builtAt] ?? '',
  };
}

/**
 * Sets {@link RECORD_KEYS.untagged} to `run`, the claim of a run that is about to throw to be
 * retried without having sent a tag, while the claim is still its own. Only when the caller saw
 * no tag moved since the record before it claimed ({@link tagsUnmovedSince}): the mark vouches
 * for every run since the record. Best effort: false when it was not written (a later run
 * claimed, the object changed, Cloud Storage refused); the next run then takes the tags as
 * possibly moved, which is never untrue.
 */
export async function markUntagged(file: File, generation: string, run: string): Promise<boolean> {
  for (let attempt = 0; attempt < 6; attempt++) {
    try {
      const state = await readState(file);
      if (!state || state.generation !== generation || state.record[RECORD_KEYS.run] !== run) return false;
      await file.setMetadata({ metadata: { [RECORD_KEYS.untagged]: run } }, { ifGenerationMatch: state.generation, ifMetagenerationMatch: state.metageneration });
      return true;
    } catch (err) {
      if (gcsStatus(err) !== 412) return false;
    }
  }
  return false;
}

/**
 * Claims `state`'s generation for the run `run` ({@link claimValue}): writes {@link RECORD_KEYS.run},
 * and nothing else, so the last record (its image, digest and layer, which the claiming run may
 * reuse) stays as it is until the new outcome replaces it. Every later tag and the record then
 * require the claim to be unchanged; a run that claims after this one takes them over.
 *
 * Why a claim and not `artificer-status: running`: a record must never say what is not so, and
 * a run the platform kills (memory, timeout) would leave `running` for good; it would also make
 * the generation look recorded, so the duplicate check would skip its redelivery. A claim left by
 * a killed run is harmless: the next run overwrites it. It is also the only evidence that an
 * attempt started and did not finish ({@link unfinishedClaim}), which is what lets an old event
 * be settled without a build.
 *
 * Claim before reading anything the build depends on (the spec's objects, the base): the run
 * that claims last then also reads last, so it never builds older inputs than one it replaces.
 *
 * Resolves `before`, the state the claim was written over (re-read after a 412): what the object
 * said when this run started, for {@link tagsUnmovedSince} and {@link keptImage}.
 *
 * `ifGenerationMatch` keeps the claim off a newer upload; `ifMetagenerationMatch` (the state just
 * read) makes the write conditionally idempotent, which is what lets @google-cloud/storage retry
 * it on 429/503 (its default `RetryConditional` strategy does not retry a metadata patch without
 * it). A 412 only means something else wrote first: re-read and claim again. Cloud Storage takes
 * about one write per second per object (https://cloud.google.com/storage/quotas, "Objects"): a
 * build that records within a second of its claim may see a 429, which the client retries.
 */
export async function claimRun(file: File, state: ObjectState, run: string): Promise<{ readonly outcome: ClaimOutcome; readonly before?: ObjectState }> {
  let live: ObjectState | undefined = state;
  for (let attempt = 0; ; attempt++) {
    if (!live) return { outcome: 'deleted' };
    if (live.generation !== state.generation) return { outcome: 'superseded' };
    try {
      await file.setMetadata({ metadata: { [RECORD_KEYS.run]: run } }, { ifGenerationMatch: live.generation, ifMetagenerationMatch: live.metageneration });
      return { outcome: 'claimed', before: live };
    } catch (err) {
      if (gcsStatus(err) === 412 && attempt < 5) {
        live = await readState(file);
        continue;
      }
      if (gcsStatus(err) === 404) return { outcome: 'deleted' };
      throw storageError(err, `gs://${file.bucket.name}/${file.name}`, 'claiming the spec object for this run');
    }
  }
}

/** What must still hold when a record is written (checked on every read, 412 re-reads included). */
export interface RecordGuard {
  /** The {@link RECORD_KEYS.run} the object must carry: this run's claim, or the one seen before claiming (undefined: none). */
  readonly run: string | undefined;
  /**
   * Write only while no record of the generation was written since the object was read (the
   * event-age settle path, which builds nothing: a run in progress then records its own outcome).
   * `recordedAt` is the `artificer-built-at` of the generation's record that read saw, undefined
   * when it saw none.
   */
  readonly unrecorded?: { readonly recordedAt: string | undefined };
}

export type WriteOutcome = 'written' | 'superseded' | 'deleted' | 'duplicate';

/**
 * Writes the record for `generation` of the spec object. Resolves 'superseded' (nothing
 * written) when the object is now a newer generation or another run claimed it since (`guard`),
 * 'duplicate' when `guard.unrecorded` and a record was written since, 'deleted' when it is gone. Without
 * `guard` the claim is not checked (a run that failed before it could read the object).
 */
export async function writeRecord(file: File, generation: string, record: BuildRecord, guard?: RecordGuard, now = new Date()): Promise<WriteOutcome> {
  const fields = recordFields(generation, record, now);
  for (let attempt = 0; ; attempt++) {
    const state = await readState(file);
    if (!state) return 'deleted';
    if (state.generation !== generation) return 'superseded';
    if (guard && state.record[RECORD_KEYS.run] !== guard.run) return 'superseded';
    if (guard?.unrecorded && state.record[RECORD_KEYS.generation] === generation && state.record[RECORD_KEYS.status] && state.record[RECORD_KEYS.builtAt] !== guard.unrecorded.recordedAt) {
      return 'duplicate';
    }
    // Send null (delete) only for keys that exist: fake-gcs-server stores null as "".
    const patch = Object.fromEntries(Object.entries(fields).filter(([k, v]) => v !== null || k in state.record));
    try {
      await file.setMetadata(
        { metadata: patch },
        { ifGenerationMatch: state.generation, ifMetagenerationMatch: state.metageneration },
      );
      return 'written';
    } catch (err) {
      // 412: someone changed the object or its metadata between our read and write. Re-read.
      if (gcsStatus(err) === 412 && attempt < 5) continue;
      if (gcsStatus(err) === 404) return 'deleted';
      throw storageError(err, `gs://${file.bucket.name}/${file.name}`, 'writing the build record');
    }
  }
}

/**
 * The custom metadata a record writes (a null deletes a key left by an earlier record). Every
 * value is bounded, so the whole stays within {@link MAX_RECORD_BYTES}: references are at most
 * 255 + 128 + 72 ASCII characters (the distribution spec's name and tag limits, a digest), tags
 * {@link MAX_TAGS_BYTES}, the error {@link MAX_ERROR_BYTES}, or {@link MAX_ERROR_WITH_IMAGE_BYTES}
 * beside an image.
 *
 * `artificer-digest`, `artificer-image` and `artificer-tags` always mean the same: the tags
 * listed name that image. A success: every tag, its new image. A failure: the tags some were
 * moved to before it, or the image an earlier record of the generation names, kept when no tag
 * moved since ({@link KeptImage}); else none of them.
 */
export function recordFields(generation: string, record: BuildRecord, now: Date): Record<string, string | null> {
  const failed = record.status === 'failed' ? record : undefined;
  const kept = failed?.kept;
  const tagList = record.tags?.length ? recordTags(record.tags) : undefined;
  const tags = kept ? (kept.tags !== undefined ? { tags: kept.tags, omitted: Number(kept.tagsOmitted ?? 0) } : undefined) : tagList;
  const digest = kept ? kept.digest : (record.digest ?? null);
  const image = kept ? (kept.image ?? null) : (record.image ?? null);
  // The layer goes with the image that contains it: a success's new layer, or the kept image's.
  const layer = record.status === 'succeeded' && record.layer
    ? { digest: record.layer.digests.digest, diffId: record.layer.digests.diffId, size: String(record.layer.digests.size), inputs: record.layer.inputs }
    : kept?.layer;
  const baseValue = record.base ?? kept?.base;
  const base = baseValue !== undefined && Buffer.byteLength(baseValue) <= MAX_BASE_BYTES ? baseValue : null;
  return {
    [RECORD_KEYS.status]: record.status,
    [RECORD_KEYS.generation]: generation,
    [RECORD_KEYS.builtAt]: now.toISOString(),
    // null deletes a key left by an earlier record
    [RECORD_KEYS.digest]: digest,
    [RECORD_KEYS.image]: image,
    [RECORD_KEYS.tags]: tags ? tags.tags : null,
    [RECORD_KEYS.tagsOmitted]: tags && tags.omitted > 0 ? String(tags.omitted) : null,
    [RECORD_KEYS.error]: failed ? recordError(failed.error, failed.note, image ? MAX_ERROR_WITH_IMAGE_BYTES : MAX_ERROR_BYTES) : null,
    [RECORD_KEYS.layer]: layer ? layer.digest : null,
    [RECORD_KEYS.layerDiffId]: layer ? layer.diffId : null,
    [RECORD_KEYS.layerSize]: layer ? layer.size : null,
    [RECORD_KEYS.layerInputs]: layer ? layer.inputs : null,
    [RECORD_KEYS.base]: base,
    // A record ends the runs the mark vouched for.
    [RECORD_KEYS.untagged]: null,
  };
}
