/**
 * Runs the real functions-framework server (`@google-cloud/functions-framework`'s own CLI) with
 * the function's handlers, as a child process on loopback, and delivers CloudEvents to it in
 * binary content mode, the exact shape Eventarc POSTs.
 *
 * By default it loads the TypeScript entry (src/functions/index.ts) through Node 24's type
 * stripping, so a test needs no `npm run build`; `source: 'package'` loads package.json `main`
 * (dist/) as `npx functions-framework` does after the README's set-up.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.ts';
import { httpAnswers, startService } from './service.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NODE = path.join(ROOT, 'node_modules/.bin/node');
const FF_MAIN = path.join(ROOT, 'node_modules/@google-cloud/functions-framework/build/src/main.js');

export interface StartFunctionOptions {
  target: 'buildOnUpload' | 'rebuildOnMessage';
  env: Record<string, string>;
  source?: 'ts' | 'package';
}

export interface RunningFunction {
  url: string;
  port: number;
  /** Everything the function wrote to stdout (its JSON log lines) and stderr. */
  readonly output: () => string;
  /** Parsed JSON log lines written so far. */
  readonly logs: () => Array<Record<string, unknown>>;
  /** Resolves once a log line matching `pred` appears (e.g. the summary of an event). */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startFunction(opts: StartFunctionOptions): Promise<RunningFunction> {
  const port = await freePort();
  const source = opts.source === 'package' ? ROOT : path.join(ROOT, 'src/functions/index.ts');
  const url = `http://127.0.0.1:${port}`;
  const service = await startService({
    name: 'functions-framework',
    command: NODE,
    args: [FF_MAIN, `--target=${opts.target}`, '--signature-type=cloudevent', `--port=${port}`, `--source=${source}`],
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    ready: () => httpAnswers(url), // any answer means it is listening
    readyTimeoutMs: 20_000,
    pollMs: 100,
  });
  const { output } = service;
  const logs = (): Array<Record<string, unknown>> =>
    output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  return {
    url,
    port,
    output,
    logs,
    async waitForLog(pred, timeoutMs = 30_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hit = logs().find(pred);
        if (hit) return hit;
        if (Date.now() > end) throw new Error(`no matching log line within ${timeoutMs} ms:\n${output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: service.stop,
  };
}

/** The Cloud Storage object resource as Eventarc puts it in `data` (JSON API shape). */
export interface StorageObjectData {
  bucket: string;
  name: string;
  generation: string;
  metageneration?: string;
  contentType?: string;
  size?: string;
  timeCreated?: string;
  updated?: string;
  [key: string]: unknown;
}

/** Builds the Eventarc data for an object from its current metadata (as `file.getMetadata()` returns it). */
export function objectEventData(md: Record<string, unknown>): StorageObjectData {
  const pick = ['kind', 'id', 'selfLink', 'name', 'bucket', 'generation', 'metageneration', 'contentType', 'timeCreated', 'updated', 'storageClass', 'timeStorageClassUpdated', 'size', 'md5Hash', 'mediaLink', 'crc32c', 'etag', 'metadata'];
  const data: Record<string, unknown> = {};
  for (const k of pick) if (md[k] !== undefined) data[k] = typeof md[k] === 'number' ? String(md[k]) : md[k];
  data.kind ??= 'storage#object';
  return data as StorageObjectData;
}

export interface DeliverOptions {
  id?: string;
  /** ce-time; default now. Set it in the past to simulate an old (much retried) event. */
  time?: Date;
}

/** POSTs a `google.cloud.storage.object.v1.finalized` CloudEvent in binary content mode. */
export async function deliverStorageEvent(fnUrl: string, data: StorageObjectData, opts: DeliverOptions = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(fnUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'ce-id': opts.id ?? randomUUID(),
      'ce-source': `//storage.googleapis.com/projects/_/buckets/${data.bucket}`,
      'ce-type': 'google.cloud.storage.object.v1.finalized',
      'ce-specversion': '1.0',
      'ce-subject': `objects/${data.name}`,
      'ce-time': (opts.time ?? new Date()).toISOString(),
    },
    body: JSON.stringify(data),
  });
  return { status: res.status, body: await res.text() };
}

/** POSTs a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent as Eventarc does. */
export async function deliverPubsubEvent(fnUrl: string, topic: string, payload: unknown, opts: DeliverOptions = {}): Promise<{ status: number; body: string }> {
  const messageId = opts.id ?? String(Date.now());
  const time = (opts.time ?? new Date()).toISOString();
  const res = await fetch(fnUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'ce-id': messageId,
      'ce-source': `//pubsub.googleapis.com/${topic}`,
      'ce-type': 'google.cloud.pubsub.topic.v1.messagePublished',
      'ce-specversion': '1.0',
      'ce-time': time,
    },
    body: JSON.stringify({
      message: { data: Buffer.from(JSON.stringify(payload)).toString('base64'), messageId, publishTime: time, attributes: {} },
      subscription: `${topic.replace('/topics/', '/subscriptions/')}-eventarc`,
    }),
  });
  return { status: res.status, body: await res.text() };
}
