// The base-image fan-out's bookkeeping, with the storage and Pub/Sub seams faked (the real path,
// fake-gcs-server and the Pub/Sub emulator, is in test/e2e/function.test.ts): which specs are
// queued, and when a spec that cannot be read makes the message come back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Storage } from '@google-cloud/storage';
import { parseFunctionConfig } from '../../src/functions/config.ts';
import { onRebuildMessage, type HandlerDeps } from '../../src/functions/handler.ts';
import { jsonLogger } from '../../src/functions/logger.ts';

const BASE = 'registry.example/base/busybox:1';

/** A bucket with spec `a` on BASE and spec `b` whose metadata read fails with 503. */
function fakeStorage(): Storage {
  const file = (name: string) => ({
    name,
    bucket: { name: 'specs' },
    async getMetadata() {
      if (name === 'b/artificer.json') throw Object.assign(new Error('Service Unavailable'), { code: 503 });
      return [{ generation: '1', metageneration: '1', size: 100, metadata: {} }];
    },
    async download() {
      return [Buffer.from(JSON.stringify({ base: BASE, target: 'registry.example/apps/a:1' }))];
    },
  });
  const bucket = { name: 'specs', file, async getFiles() { return [[file('a/artificer.json'), file('b/artificer.json')]]; } };
  return { bucket: () => bucket } as unknown as Storage;
}

function deps(published: unknown[][], lines: string[]): HandlerDeps {
  return {
    storage: fakeStorage(),
    credentials: { resolve: async () => undefined },
    publisher: { publish: async (_topic, payloads) => (published.push([...payloads]), payloads.map(String)) },
    config: parseFunctionConfig({ ARTIFICER_REBUILD_PREFIX: 'gs://specs/', ARTIFICER_REBUILD_TOPIC: 'projects/p/topics/rebuild', ARTIFICER_MAX_EVENT_AGE: '3600' }),
    logger: jsonLogger('info', {}, (l) => lines.push(l)),
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
