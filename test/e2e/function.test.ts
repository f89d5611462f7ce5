// End to end, as a user meets the Cloud Function: files and spec uploaded (once with the real
// `gcloud storage cp` pointed at fake-gcs-server, once with @google-cloud/storage), the Eventarc
// event delivered to the functions-framework server, the record read back, the image pulled by
// skopeo and run with runc. Then the rebuild path: the Pub/Sub emulator pushes to the
// rebuildOnMessage function, for a {bucket, object} message and for an Artifact Registry
// notification about the base image.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Bucket } from '@google-cloud/storage';
import { isTemporary } from '../../src/functions/handler.ts';
import { PublishError, RestPublisher } from '../../src/functions/pubsub.ts';
import { startFaultProxy } from '../support/fault-proxy.ts';
import { deliverPubsubEvent, deliverStorageEvent, objectEventData, startFunction, type RunningFunction } from '../support/functions.ts';
import { gcloudStorageEnv, startGcs, type RunningGcs } from '../support/gcs.ts';
import { pushBusyboxBase } from '../support/images.ts';
import { metadataEnv, startMetadataServer, type RunningMetadataServer } from '../support/metadata-server.ts';
import { startPubsub, type RunningPubsub } from '../support/pubsub.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { pullAndRun } from '../support/runc.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { exec, tool } from '../support/tools.ts';

const BUCKET = 'artifacts-e2e';
let gcs: RunningGcs;
let md: RunningMetadataServer;
let registry: RunningRegistry;
let pubsub: RunningPubsub;
let upload: RunningFunction;
let rebuild: RunningFunction;
let bucket: Bucket;
let base: string;
let tmp: TempDir;

async function record(name: string): Promise<Record<string, string>> {
  const [meta] = await bucket.file(name).getMetadata();
  return Object.fromEntries(Object.entries((meta.metadata ?? {}) as Record<string, string>).filter(([k]) => k.startsWith('artificer-')));
}

async function craneDigest(ref: string): Promise<string> {
  return (await exec(tool('crane'), ['digest', '--insecure', ref])).stdout.trim();
}

before(async () => {
  tmp = await tempDir('fn-e2e');
  [gcs, md, registry, pubsub] = await Promise.all([startGcs(), startMetadataServer(), startRegistry({ auth: 'none' }), startPubsub()]);
  base = (await pushBusyboxBase(registry.host, { repository: 'base/busybox', format: 'oci' })).reference;
  await gcs.createBucket(BUCKET);
  bucket = gcs.storage().bucket(BUCKET);
  const env = {
    ...metadataEnv(md.host),
    STORAGE_EMULATOR_HOST: gcs.url,
    ARTIFICER_ALLOWED_TARGETS: `${registry.host}/apps/`,
    ARTIFICER_REBUILD_PREFIX: `gs://${BUCKET}/`,
    ARTIFICER_REBUILD_TOPIC: `projects/${pubsub.project}/topics/artificer-rebuild`,
    PUBSUB_EMULATOR_HOST: pubsub.host,
  };
  [upload, rebuild] = await Promise.all([startFunction({ target: 'buildOnUpload', env }), startFunction({ target: 'rebuildOnMessage', env })]);
  await pubsub.createTopic('artificer-rebuild');
  await pubsub.createPushSubscription('rebuild-push', 'artificer-rebuild', `${rebuild.url}/projects/${pubsub.project}/topics/artificer-rebuild`);
  await pubsub.createTopic('gcr');
  await pubsub.createPushSubscription('gcr-push', 'gcr', `${rebuild.url}/projects/${pubsub.project}/topics/gcr`);
});

after(async () => {
  await Promise.allSettled([upload?.stop(), rebuild?.stop(), pubsub?.stop(), registry?.stop(), md?.stop(), gcs?.stop(), tmp?.remove()]);
});

describe('Cloud Function end to end', { concurrency: false }, () => {
  test('gcloud storage cp the files and the spec → event → record = registry digest → the image runs', async () => {
    const dir = path.join(tmp.path, 'site');
    await mkdir(path.join(dir, 'bin'), { recursive: true });
    await writeFile(path.join(dir, 'bin', 'greet'), '#!/bin/sh\necho "greetings from $GREETING"\n');
    await writeFile(
      path.join(dir, 'artificer.json'),
      JSON.stringify({
        base,
        target: `${registry.host}/apps/greet:1`,
        files: [{ from: 'bin/', to: '/usr/local/bin/', mode: '0755' }],
        env: { GREETING: 'gcloud' },
        cmd: ['greet'],
      }),
    );
    const genv = gcloudStorageEnv(gcs.url, path.join(tmp.path, 'gcloud-config'));
    // Files first, the spec last: the convention the function relies on.
    await exec(tool('gcloud'), ['storage', 'cp', path.join(dir, 'bin', 'greet'), `gs://${BUCKET}/greet/bin/greet`], { env: genv });
    await exec(tool('gcloud'), ['storage', 'cp', path.join(dir, 'artificer.json'), `gs://${BUCKET}/greet/artificer.json`], { env: genv });

    const [meta] = await bucket.file('greet/artificer.json').getMetadata();
    const res = await deliverStorageEvent(upload.url, objectEventData(meta as Record<string, unknown>));
    assert.equal(res.status, 204, upload.output().slice(-2000));
    const rec = await record('greet/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], await craneDigest(`${registry.host}/apps/greet:1`));
    const run = await pullAndRun(rec['artificer-image']!, { insecure: true });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'greetings from gcloud');
  });

  test('a .tar.gz bundle uploaded with @google-cloud/storage is re-packed and runs', async () => {
    const src = path.join(tmp.path, 'bundle-src');
    await mkdir(path.join(src, 'app'), { recursive: true });
    await writeFile(path.join(src, 'app', 'main.sh'), '#!/bin/sh\necho "bundle says $(cat /app/msg.txt)"\n', { mode: 0o755 });
    await writeFile(path.join(src, 'app', 'msg.txt'), 'hi');
    const tgz = path.join(tmp.path, 'dist.tar.gz');
    await exec(tool('tar'), ['-C', src, '-czf', tgz, 'app']);
    await bucket.upload(tgz, { destination: 'svc/dist.tar.gz' });
    await bucket.file('svc/svc.artificer.json').save(JSON.stringify({ base, target: `${registry.host}/apps/svc:1`, files: [{ bundle: 'dist.tar.gz' }], entrypoint: '/app/main.sh' }));
    const [meta] = await bucket.file('svc/svc.artificer.json').getMetadata();
    assert.equal((await deliverStorageEvent(upload.url, objectEventData(meta as Record<string, unknown>))).status, 204);
    const rec = await record('svc/svc.artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], await craneDigest(`${registry.host}/apps/svc:1`));
    const run = await pullAndRun(rec['artificer-image']!, { insecure: true });
    assert.equal(run.stdout.trim(), 'bundle says hi', run.stderr);
  });

  test('Pub/Sub {bucket, object} rebuilds the spec (emulator push → functions-framework → handler)', async () => {
    const before = await record('greet/artificer.json');
    await pubsub.publish('artificer-rebuild', { bucket: BUCKET, object: 'greet/artificer.json' });
    const line = await rebuild.waitForLog((l) => l.trigger === 'rebuild' && l.spec === `gs://${BUCKET}/greet/artificer.json`, 60_000);
    assert.equal(line.outcome, 'succeeded', rebuild.output().slice(-2000));
    const after = await record('greet/artificer.json');
    assert.notEqual(after['artificer-built-at'], before['artificer-built-at'], 'a new record was written');
    assert.equal(after['artificer-digest'], before['artificer-digest'], 'same inputs, same digest');
  });

  test('the publisher: message ids from the emulator; a missing topic is permanent, no emulator temporary', async () => {
    const publisher = new RestPublisher({ emulatorHost: pubsub.host });
    const ids = await publisher.publish(`projects/${pubsub.project}/topics/gcr-unused`, []).catch((e: unknown) => e);
    assert.deepEqual(ids, [], 'nothing to publish, no request');
    await pubsub.createTopic('publisher-probe');
    assert.equal((await publisher.publish(`projects/${pubsub.project}/topics/publisher-probe`, [{ a: 1 }, { b: 2 }])).length, 2);
    const missing = await publisher.publish(`projects/${pubsub.project}/topics/no-such-topic`, [{ a: 1 }]).catch((e: unknown) => e);
    assert.ok(missing instanceof PublishError && missing.status === 404, String(missing));
    assert.match(missing.message, /no-such-topic/);
    assert.equal(isTemporary(missing), false);
    const down = await new RestPublisher({ emulatorHost: '127.0.0.1:9' }).publish('projects/p/topics/t', [{}]).catch((e: unknown) => e);
    assert.ok(down instanceof PublishError, String(down));
    assert.equal(isTemporary(down), true);
  });

  test('an Artifact Registry INSERT for the base tag queues a rebuild of every spec on that base', async () => {
    // A spec that pushes to the base's own tag (a bare tag resolves against its target, the
    // base repository) must not be queued: its push would notify the topic again, forever.
    const baseTag = base.slice(base.lastIndexOf(':') + 1);
    await bucket.file('loop/artificer.json').save(JSON.stringify({ base, target: base.replace(/:[^:/]+$/, ':loop'), tags: [baseTag] }));
    // Patch the base: a new image under the same tag.
    await exec(tool('crane'), ['mutate', '--insecure', base, '--env', 'PATCHED=1', '-t', base]);
    const baseDigest = await craneDigest(base);
    await pubsub.publish('gcr', { action: 'INSERT', digest: `${base.replace(/:[^:/]+$/, '')}@${baseDigest}`, tag: base });
    // The notification only queues: one message per spec on the rebuild topic...
    const queued = await rebuild.waitForLog((l) => l.base === base && Array.isArray(l.specs), 60_000);
    assert.deepEqual(queued.specs, ['greet/artificer.json', 'svc/svc.artificer.json'], rebuild.output().slice(-2000));
    // ...and each spec builds in its own invocation.
    for (const spec of ['greet/artificer.json', 'svc/svc.artificer.json']) {
      const line = await rebuild.waitForLog((l) => l.trigger === 'base-update' && l.spec === `gs://${BUCKET}/${spec}`, 60_000);
      assert.equal(line.outcome, 'succeeded', rebuild.output().slice(-2000));
      // No artifact changed: the recorded layer went on the new base, nothing was downloaded.
      assert.equal(line.layerReused, true, JSON.stringify(line));
      assert.equal(line.objectBytes, 0);
    }
    const rec = await record('greet/artificer.json');
    const digest = await craneDigest(`${registry.host}/apps/greet:1`);
    assert.equal(rec['artificer-digest'], digest);
    const run = await pullAndRun(rec['artificer-image']!, { insecure: true, args: ['sh', '-c', 'echo $PATCHED; greet'] });
    assert.equal(run.stdout.trim(), '1\ngreetings from gcloud', 'the rebuilt image is on the patched base, with its files');
  });

  test('the fan-out lists only specs, and downloads no spec whose record names another base', async () => {
    const other = `${registry.host}/base/other:1`; // never pushed: its specs fail, on record
    const spec = (name: string, body: Record<string, unknown>): Promise<void> => bucket.file(name).save(JSON.stringify(body), { resumable: false });
    await bucket.file('fan/other/app.bin').save('x'.repeat(1000), { resumable: false });
    await spec('fan/on-base/artificer.json', { base, target: `${registry.host}/apps/fan-on:1` });
    await spec('fan/other/artificer.json', { base: other, target: `${registry.host}/apps/fan-other:1`, files: ['app.bin'] });
    await spec('fan/unrecorded/artificer.json', { base: other, target: `${registry.host}/apps/fan-unrecorded:1` });
    for (const name of ['fan/on-base/artificer.json', 'fan/other/artificer.json']) {
      const [meta] = await bucket.file(name).getMetadata();
      assert.equal((await deliverStorageEvent(upload.url, objectEventData(meta as Record<string, unknown>))).status, 204);
    }
    const onBase = await record('fan/on-base/artificer.json');
    assert.equal(onBase['artificer-status'], 'succeeded', JSON.stringify(onBase));
    assert.equal(onBase['artificer-base'], base, 'a success names its base');
    const failed = await record('fan/other/artificer.json');
    assert.equal(failed['artificer-status'], 'failed', JSON.stringify(failed));
    assert.equal(failed['artificer-base'], other, 'so does a failure after the spec was read');

    await pubsub.createTopic('fanout-probe'); // no subscription: nothing is built from it
    const gcsProxy = await startFaultProxy(gcs.url);
    const fan = await startFunction({
      target: 'rebuildOnMessage',
      env: {
        ...metadataEnv(md.host),
        STORAGE_EMULATOR_HOST: gcsProxy.url,
        ARTIFICER_ALLOWED_TARGETS: `${registry.host}/apps/`,
        ARTIFICER_REBUILD_PREFIX: `gs://${BUCKET}/fan/`,
        ARTIFICER_REBUILD_TOPIC: `projects/${pubsub.project}/topics/fanout-probe`,
        PUBSUB_EMULATOR_HOST: pubsub.host,
      },
    });
    try {
      const res = await deliverPubsubEvent(fan.url, `projects/${pubsub.project}/topics/gcr`, { action: 'INSERT', tag: base });
      assert.equal(res.status, 204, fan.output().slice(-2000));
      const line = await fan.waitForLog((l) => l.base === base && Array.isArray(l.specs));
      // The unrecorded spec (no record) is read to learn its base: it is not on this one.
      assert.deepEqual(line.specs, ['fan/on-base/artificer.json'], JSON.stringify(line));
      const downloaded = gcsProxy.requests.filter((r) => r.method === 'GET' && r.path.includes('alt=media')).map((r) => decodeURIComponent(r.path.split('?')[0]!.split('/o/')[1]!));
      assert.deepEqual(downloaded.sort(), ['fan/on-base/artificer.json', 'fan/unrecorded/artificer.json']);
      assert.deepEqual([line.specsRead, line.specsPassed], [2, 1]);
      const lists = gcsProxy.requests.filter((r) => r.method === 'GET' && /\/o\?/.test(r.path));
      assert.ok(lists.length > 0 && lists.every((r) => new URL(r.path, 'http://x').searchParams.get('matchGlob') === '**artificer.json'), JSON.stringify(lists));
    } finally {
      await fan.stop();
      await gcsProxy.stop();
    }
  });
});
