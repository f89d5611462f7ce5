/**
 * The Pub/Sub emulator from the preinstalled gcloud SDK (component `pubsub-emulator`, Java 17),
 * offline, with a throw-away CLOUDSDK_CONFIG whose update check is off. Talks to it over its REST
 * surface (the same paths as pubsub.googleapis.com/v1).
 *
 * A push subscription whose endpoint is the functions-framework server delivers the Pub/Sub push
 * body; the framework's legacy Pub/Sub middleware turns it into the
 * `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent the handler receives. The push
 * endpoint's path must be `/projects/P/topics/T` for the framework to name the topic.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './ports.ts';
import { httpAnswers, startService } from './service.ts';
import { tool } from './tools.ts';

export interface RunningPubsub {
  host: string;
  url: string;
  project: string;
  createTopic(topic: string): Promise<void>;
  createPushSubscription(name: string, topic: string, endpoint: string): Promise<void>;
  publish(topic: string, payload: unknown): Promise<string>;
  output(): string;
  stop(): Promise<void>;
}

export async function startPubsub(project = 'test-project'): Promise<RunningPubsub> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const config = mkdtempSync(path.join(tmpdir(), 'artificer-gcloud-'));
  mkdirSync(path.join(config, 'configurations'), { recursive: true });
  mkdirSync(path.join(config, 'data'), { recursive: true });
  writeFileSync(path.join(config, 'configurations', 'config_default'), '[component_manager]\ndisable_update_check = true\n[core]\ndisable_usage_reporting = true\n');
  const service = await startService({
    name: 'pubsub emulator',
    command: tool('gcloud'),
    args: ['beta', 'emulators', 'pubsub', 'start', `--host-port=${host}`, `--project=${project}`, `--data-dir=${config}/data`],
    env: { ...process.env, CLOUDSDK_CONFIG: config, CLOUDSDK_CORE_DISABLE_PROMPTS: '1' },
    processGroup: true, // gcloud starts java as a child and does not pass SIGTERM on
    ready: () => httpAnswers(url, (status) => status >= 200 && status < 300), // the JVM takes a few seconds
    readyTimeoutMs: 60_000,
    pollMs: 250,
    stopGraceMs: 5000,
    afterStop: () => rm(config, { recursive: true, force: true, maxRetries: 3 }),
  });
  const call = async (method: string, p: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${url}/v1/${p}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? null : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`pubsub ${method} ${p}: ${res.status} ${text}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  return {
    host,
    url,
    project,
    async createTopic(topic) {
      await call('PUT', `projects/${project}/topics/${topic}`);
    },
    async createPushSubscription(name, topic, endpoint) {
      await call('PUT', `projects/${project}/subscriptions/${name}`, {
        topic: `projects/${project}/topics/${topic}`,
        pushConfig: { pushEndpoint: endpoint },
        ackDeadlineSeconds: 60,
      });
    },
    async publish(topic, payload) {
      const r = await call('POST', `projects/${project}/topics/${topic}:publish`, {
        messages: [{ data: Buffer.from(JSON.stringify(payload)).toString('base64') }],
      });
      return (r.messageIds as string[])[0]!;
    },
    output: service.output,
    stop: service.stop,
  };
}
