/**
 * The two CloudEvent payloads the function accepts, validated where they enter.
 *
 * - `google.cloud.storage.object.v1.finalized`: `data` is the Cloud Storage object resource
 *   (https://cloud.google.com/storage/docs/json_api/v1/objects#resource); `generation` arrives as
 *   a string (int64 in JSON).
 * - `google.cloud.pubsub.topic.v1.messagePublished`: `data` is
 *   `{ message: { data: base64, attributes, messageId, publishTime }, subscription }`.
 */
import { UsageError } from '../errors.ts';

/** An object named `artificer.json` or ending in `.artificer.json`, in any folder. */
export function isSpecObject(name: string): boolean {
  const base = name.slice(name.lastIndexOf('/') + 1);
  return base === 'artificer.json' || (base.endsWith('.artificer.json') && base.length > '.artificer.json'.length);
}

export interface CloudEventLike {
  readonly id?: string;
  readonly type?: string;
  readonly source?: string;
  readonly subject?: string;
  readonly time?: string;
  readonly data?: unknown;
}

export interface StorageObjectEvent {
  readonly bucket: string;
  readonly name: string;
  readonly generation: string;
  /** When the event happened (ce-time, else the object's `updated`), for the age limit. */
  readonly time: Date;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function date(...candidates: unknown[]): Date {
  for (const c of candidates) {
    if (typeof c === 'string') {
      const d = new Date(c);
      if (!Number.isNaN(d.getTime())) return d;
    }
  }
  return new Date();
}

/** Parses a storage CloudEvent's data; `data` may arrive as a Buffer/string in binary mode. */
export function parseStorageEvent(event: CloudEventLike): StorageObjectEvent {
  let data: unknown = event.data;
  if (typeof data === 'string' || data instanceof Uint8Array) {
    try {
      data = JSON.parse(Buffer.from(data).toString('utf8'));
    } catch {
      throw new UsageError(`event ${event.id ?? '?'}: data is not JSON`);
    }
  }
  const d = obj(data);
  const bucket = d?.bucket;
  const name = d?.name;
  const generation = d?.generation;
  if (typeof bucket !== 'string' || !bucket || typeof name !== 'string' || !name) {
    throw new UsageError(`event ${event.id ?? '?'}: data has no bucket/name (not a Cloud Storage object event)`);
  }
  const gen = typeof generation === 'number' ? String(generation) : generation;
  if (typeof gen !== 'string' || !/^\d+$/.test(gen)) {
    throw new UsageError(`event ${event.id ?? '?'}: gs://${bucket}/${name} has no valid generation`);
  }
  return { bucket, name, generation: gen, time: date(event.time, d?.updated, d?.timeCreated) };
}

export type RebuildMessage =
  /** `base`: the base-image tag whose update queued this rebuild (the fan-out sets it). */
  | { readonly kind: 'spec'; readonly bucket: string; readonly object: string; readonly base?: string; readonly time: Date }
  | { readonly kind: 'base'; readonly tag: string; readonly digest?: string; readonly time: Date }
  | { readonly kind: 'ignored'; readonly reason: string; readonly time: Date };

/**
 * Decodes a Pub/Sub CloudEvent. `{"bucket", "object"}` rebuilds one spec (`"base"` says which
 * base-image update queued it, for the logs); an Artifact Registry
 * notification (`{"action":"INSERT","digest":…,"tag":…}`, topic `gcr`) rebuilds specs whose base
 * is that tag. Anything else is ignored (a malformed message will not get better on retry).
 */
export function parseRebuildMessage(event: CloudEventLike): RebuildMessage {
  const d = obj(event.data);
  // Eventarc sends {message, subscription}; a legacy-shaped push may carry the message itself.
  const message = obj(d?.message) ?? (typeof d?.data === 'string' ? d : undefined);
  const time = date(event.time, message?.publishTime, message?.publish_time);
  if (!message || typeof message.data !== 'string') return { kind: 'ignored', reason: 'no message.data', time };
  let body: Record<string, unknown> | undefined;
  try {
    body = obj(JSON.parse(Buffer.from(message.data, 'base64').toString('utf8')));
  } catch {
    return { kind: 'ignored', reason: 'message data is not JSON', time };
  }
  if (!body) return { kind: 'ignored', reason: 'message data is not a JSON object', time };
  if (typeof body.bucket === 'string' && typeof body.object === 'string') {
    if (!isSpecObject(body.object)) return { kind: 'ignored', reason: `gs://${body.bucket}/${body.object} is not a spec object`, time };
    const base = typeof body.base === 'string' && body.base ? { base: body.base } : {};
    return { kind: 'spec', bucket: body.bucket, object: body.object, ...base, time };
  }
  if (typeof body.action === 'string') {
    if (body.action !== 'INSERT') return { kind: 'ignored', reason: `registry action ${body.action}`, time };
    if (typeof body.tag !== 'string' || !body.tag) return { kind: 'ignored', reason: 'registry INSERT without a tag (a digest-only push)', time };
    return typeof body.digest === 'string' ? { kind: 'base', tag: body.tag, digest: body.digest, time } : { kind: 'base', tag: body.tag, time };
  }
  return { kind: 'ignored', reason: 'neither {bucket, object} nor a registry notification', time };
}
