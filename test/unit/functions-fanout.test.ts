// The base-image fan-out's bookkeeping, with the storage and Pub/Sub seams faked (the real path,
// fake-gcs-server and the Pub/Sub emulator, is in test/e2e/function.test.ts): which specs are
// queued, and when a spec that cannot be read makes the message come back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Storage } from '@google-cloud/storage';
import { parseFunctionConfig } from '../../src/functions/config.ts';
import { onRebuildMessage, type HandlerDeps } from '../../src/functions/handler.ts';
import { jsonLogger } from '../../src/functions/logger.ts';
import { PublishError, RestPublisher } from '../../src/functions/pubsub.ts';

const BASE = 'registry.example/base/busybox:1';

/** A bucket with specs on BASE (`names`), of which `b` fails its metadata read with 503. */
function fakeStorage(names = ['a/artificer.json', 'b/artificer.json']): Storage {
  const file = (name: string) => ({
    name,
    bucket: { name: 'specs' },
    metadata: { generation: '1', metadata: {} },
    async getMetadata() {
      if (name === 'b/artificer.json') throw Object.assign(new Error('Service Unavailable'), { code: 503 });
      return [{ generation: '1', metageneration: '1', size: 100, metadata: {} }];
    },
    async download() {
      return [Buffer.from(JSON.stringify({ base: BASE, target: 'registry.example/apps/a:1' }))];
    },
  });
  const bucket = { name: 'specs', file, async getFiles() { return [names.map(file)]; } };
  return { bucket: () => bucket } as unknown as Storage;
}

function deps(published: unknown[][], lines: string[], over: Partial<HandlerDeps> = {}): HandlerDeps {
  return {
    storage: fakeStorage(),
    credentials: { resolve: async () => undefined },
    publisher: { publish: async (_topic, payloads) => (published.push([...payloads]), payloads.map(String)) },
    ...over,
    config: parseFunctionConfig({ ARTIFICER_REBUILD_PREFIX: 'gs://specs/', ARTIFICER_REBUILD_TOPIC: 'projects/p/topics/rebuild', ARTIFICER_MAX_EVENT_AGE: '3600' }),
    logger: jsonLogger('info', {}, (l) => lines.push(l)),
    ...over,
  };
}

test('a spec that cannot be read yet: the readable ones are queued, and the message comes back', async () => {
  const published: unknown[][] = [];
  await assert.rejects(onRebuildMessage(deps(published, []), { kind: 'base', tag: BASE, time: new Date() }), /Service Unavailable/);
  assert.deepEqual(published, [[{ bucket: 'specs', object: 'a/artificer.json', base: BASE }]]);
});

test('past ARTIFICER_MAX_EVENT_AGE the message is acknowledged, the unreadable specs logged', async () => {
  const published: unknown[][] = [];
  const lines: string[] = [];
  const outcomes = await onRebuildMessage(deps(published, lines), { kind: 'base', tag: BASE, time: new Date(Date.now() - 2 * 86_400_000) });
  assert.deepEqual(outcomes, ['queued']);
  assert.equal(published.length, 1);
  const error = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.severity === 'ERROR');
  assert.match(String(error?.message), /gave up on specs that could not be read .*Service Unavailable/);
});

test('a publish refused for good part-way: the specs of earlier batches count as queued, the rest as failed', async () => {
  const lines: string[] = [];
  const refused = Object.assign(new PublishError('publishing: Pub/Sub answered 403', 403), { published: 1 });
  const outcomes = await onRebuildMessage(
    deps([], lines, { storage: fakeStorage(['a/artificer.json', 'c/artificer.json']), publisher: { publish: async () => Promise.reject(refused) } }),
    { kind: 'base', tag: BASE, time: new Date() },
  );
  assert.deepEqual(outcomes, ['queued', 'failed']);
  const error = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.severity === 'ERROR');
  assert.deepEqual([error?.queued, error?.specs], [['a/artificer.json'], ['c/artificer.json']]);
});

test('RestPublisher: batches of 1,000, and how many went out before a refusal', async () => {
  const { createServer } = await import('node:http');
  const batches: number[] = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      const n = (JSON.parse(body) as { messages: unknown[] }).messages.length;
      batches.push(n);
      if (batches.length === 1) res.writeHead(200).end(JSON.stringify({ messageIds: Array.from({ length: n }, (_, i) => String(i)) }));
      else res.writeHead(403).end('{"error":{"code":403,"message":"denied"}}');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const publisher = new RestPublisher({ emulatorHost: `127.0.0.1:${(srv.address() as { port: number }).port}` });
    const err = await publisher.publish('projects/p/topics/t', Array.from({ length: 1500 }, (_, i) => ({ i }))).catch((e: unknown) => e);
    assert.deepEqual(batches, [1000, 500]);
    assert.ok(err instanceof PublishError && err.status === 403 && err.published === 1000, String(err));
  } finally {
    srv.close();
  }
});

/** A bucket of readable specs: each its body, its live generation and the custom metadata on it. */
function specBucket(specs: Record<string, { body: Record<string, unknown>; generation?: string; custom?: Record<string, string> }>): { storage: Storage; downloaded: string[] } {
  const downloaded: string[] = [];
  const file = (name: string) => {
    const { body, generation = '2', custom = {} } = specs[name]!;
    return {
      name,
      bucket: { name: 'specs' },
      metadata: { generation, metadata: custom },
      async getMetadata() {
        return [{ generation, metageneration: '1', size: 100, metadata: custom }];
      },
      async download() {
        downloaded.push(name);
        return [Buffer.from(JSON.stringify(body))];
      },
    };
  };
  const bucket = { name: 'specs', file, async getFiles() { return [Object.keys(specs).map(file)]; } };
  return { storage: { bucket: () => bucket } as unknown as Storage, downloaded };
}

test('which specs a base update queues: those on that tag, not on another, and none that pushes to it', async () => {
  const published: unknown[][] = [];
  const { storage, downloaded } = specBucket({
    'on/artificer.json': { body: { base: BASE, target: 'registry.example/apps/on:1' } },
    'other-tag/artificer.json': { body: { base: 'registry.example/base/busybox:2', target: 'registry.example/apps/o:1' } },
    'other-repo/artificer.json': { body: { base: 'registry.example/base/alpine:1', target: 'registry.example/apps/o:1' } },
    'other-host/artificer.json': { body: { base: 'mirror.example/base/busybox:1', target: 'registry.example/apps/o:1' } },
    'pinned/artificer.json': { body: { base: `${BASE}@sha256:${'a'.repeat(64)}`, target: 'registry.example/apps/p:1' } },
    // Its bare extra tag resolves against its target, the base's repository: its push would notify again.
    'loop/artificer.json': { body: { base: BASE, target: 'registry.example/base/busybox:loop', tags: ['1'] } },
    // The live generation's record names another base: passed over, not downloaded.
    'recorded-other/artificer.json': { body: { base: BASE, target: 'registry.example/apps/r:1' }, custom: { 'artificer-generation': '2', 'artificer-base': 'registry.example/base/alpine:1' } },
    // A record of an older generation (a copy keeps the metadata) says nothing of this one: read.
    'copied/artificer.json': { body: { base: BASE, target: 'registry.example/apps/c:1' }, custom: { 'artificer-generation': '1', 'artificer-base': 'registry.example/base/alpine:1' } },
  });
  const outcomes = await onRebuildMessage(deps(published, [], { storage }), { kind: 'base', tag: BASE, time: new Date() });
  assert.deepEqual(published, [['copied/artificer.json', 'on/artificer.json'].map((object) => ({ bucket: 'specs', object, base: BASE }))]);
  assert.deepEqual(outcomes, ['queued', 'queued']);
  assert.ok(!downloaded.includes('recorded-other/artificer.json'), downloaded.join());
});
