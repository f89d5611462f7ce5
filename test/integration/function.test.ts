// The buildOnUpload function as deployed: the real functions-framework server running the real
// handlers, events POSTed in Eventarc's binary CloudEvent shape, fake-gcs-server as Cloud Storage,
// google-auth-library's ADC path fed by the loopback metadata stand-in, and a token-auth
// docker-registry (behind the fault proxy) whose token endpoint accepts only
// `oauth2accesstoken` + a token that stand-in issued.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createGzip, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import type { Bucket } from '@google-cloud/storage';
import tarStream from 'tar-stream';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { deliverPubsubEvent, deliverStorageEvent, objectEventData, startFunction, type RunningFunction } from '../support/functions.ts';
import { gcloudStorageEnv, startGcs, type RunningGcs } from '../support/gcs.ts';
import { pushBusyboxBase } from '../support/images.ts';
import { metadataEnv, startMetadataServer, type RunningMetadataServer } from '../support/metadata-server.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { tempDir } from '../support/tmp.ts';
import { exec, hasTool, tool } from '../support/tools.ts';
import { parseScope } from '../support/token-server.ts';
import { freePort } from '../support/ports.ts';
import { MAX_DECODED_BYTES, pinGcsSource, READ_AHEAD_MAX_BYTES, READ_AHEAD_OBJECTS, UPLOAD_QUIET_MS } from '../../src/functions/gcs-source.ts';
import { MAX_LAYER_PATH_BYTES } from '../../src/layer/tar.ts';
import { readState, writeRecord, type BuildRecord } from '../../src/functions/record.ts';
import { createStorage } from '../../src/functions/storage.ts';
import { createLayer } from '../../src/layer/layer.ts';
import { localSource } from '../../src/source/local.ts';
import { parseSpecText } from '../../src/spec/spec.ts';

const BUCKET = 'artifacts-it';
const ADMIN = 'admin';
const ADMIN_PW = 'admin-secret-pw';

let gcs: RunningGcs;
let md: RunningMetadataServer;
let registry: RunningRegistry;
let baseRegistry: RunningRegistry;
let proxy: FaultProxy;
let fn: RunningFunction;
let bucket: Bucket;
let base: string;

/** A manifest request to the registry as the admin, independently of the function. */
async function fetchManifest(repo: string, tag: string, method: 'HEAD' | 'GET'): Promise<Response> {
  const tokenRes = await fetch(
    `${registry.tokenServer!.realm}?service=${encodeURIComponent(registry.tokenServer!.service)}&scope=repository:${repo}:pull`,
    { headers: { authorization: `Basic ${Buffer.from(`${ADMIN}:${ADMIN_PW}`).toString('base64')}` } },
  );
  const { token } = (await tokenRes.json()) as { token: string };
  return fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json',
    },
  });
}

/** What the registry serves for a tag: the manifest digest. */
async function registryDigest(repo: string, tag: string): Promise<string | undefined> {
  const res = await fetchManifest(repo, tag, 'HEAD');
  return res.status === 200 ? (res.headers.get('docker-content-digest') ?? undefined) : undefined;
}

/** The digest and size of the last layer of the image a tag names: the build's new layer. */
async function lastLayer(repo: string, tag: string): Promise<{ digest: string; size: number }> {
  const res = await fetchManifest(repo, tag, 'GET');
  assert.equal(res.status, 200);
  const manifest = (await res.json()) as { layers: Array<{ digest: string; size: number }> };
  return manifest.layers.at(-1)!;
}

async function upload(name: string, content: string | Buffer): Promise<Record<string, unknown>> {
  await bucket.file(name).save(content, { resumable: false });
  const [meta] = await bucket.file(name).getMetadata();
  return meta as Record<string, unknown>;
}

async function uploadSpec(name: string, spec: Record<string, unknown>): Promise<Record<string, unknown>> {
  return upload(name, JSON.stringify({ base, ...spec }));
}

/**
 * The record on a spec object: its artificer-* keys but the claim ({@link claimOf}) and the mark
 * of a claim that moved no tag, which are not an outcome.
 */
async function record(name: string): Promise<Record<string, string>> {
  const [meta] = await bucket.file(name).getMetadata();
  const custom = (meta.metadata ?? {}) as Record<string, string>;
  return Object.fromEntries(Object.entries(custom).filter(([k]) => k.startsWith('artificer-') && k !== 'artificer-run' && k !== 'artificer-run-untagged'));
}

/**
 * Leaves on a spec object the claim (`artificer-run`) of a run that started at `startedMs` and
 * was then killed: what a run the platform kills leaves, and nothing else.
 */
async function leaveKilledClaim(name: string, startedMs = Date.now()): Promise<void> {
  await bucket.file(name).setMetadata({ metadata: { 'artificer-run': `${randomUUID()}@${startedMs}` } });
}

/** The id of the last run that claimed a spec object (`artificer-run`). */
async function claimOf(name: string): Promise<string | undefined> {
  const [meta] = await bucket.file(name).getMetadata();
  return (meta.metadata as Record<string, string> | undefined)?.['artificer-run'];
}

function target(repo: string, tag = 'v1'): string {
  return `${proxy.host}/${repo}:${tag}`;
}

async function tarBundle(entries: Array<{ header: Record<string, unknown>; body?: string }>, gzip: boolean): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    const header = { mtime: new Date(0), ...e.header } as tarStream.Header;
    if (e.body === undefined) pack.entry(header);
    else pack.entry(header, e.body);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of (gzip ? pack.pipe(createGzip()) : pack) as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

before(async () => {
  [gcs, md] = await Promise.all([startGcs(), startMetadataServer()]);
  registry = await startRegistry({
    auth: 'token',
    authorize: (req) => {
      if (req.username === ADMIN && req.password === ADMIN_PW) return req.scopes;
      if (req.username !== 'oauth2accesstoken' || !req.password || !md.isValid(req.password)) return false;
      // The service account may pull anything and push anywhere but readonly/*.
      return req.scopes.map((s) => {
        const p = parseScope(s);
        return p && p.name.startsWith('readonly/') ? `${p.type}:${p.name}:pull` : s;
      });
    },
  });
  proxy = await startFaultProxy(registry.url);
  // The base lives on a second, anonymous registry (crane refuses token realms on loopback, so it
  // cannot seed the token registry); it must never receive the service account's token.
  baseRegistry = await startRegistry({ auth: 'none' });
  base = (await pushBusyboxBase(baseRegistry.host, { repository: 'base/busybox', format: 'docker' })).reference;
  await gcs.createBucket(BUCKET);
  bucket = gcs.storage().bucket(BUCKET);
  fn = await startFunction({ target: 'buildOnUpload', env: functionEnv() });
});

function functionEnv(): Record<string, string> {
  return {
    ...metadataEnv(md.host),
    STORAGE_EMULATOR_HOST: gcs.url,
    ARTIFICER_ALLOWED_TARGETS: `${proxy.host}/apps/,${proxy.host}/readonly/`,
    ARTIFICER_GOOGLE_REGISTRIES: proxy.host,
    ARTIFICER_REGISTRY_RETRY_ATTEMPTS: '1',
    ARTIFICER_MAX_EVENT_AGE: '600',
  };
}

/** Object downloads (not metadata reads) of `name` that crossed `gcsProxy`. */
function downloads(gcsProxy: FaultProxy, name: string): number {
  return gcsProxy.requests.filter((r) => r.method === 'GET' && r.path.includes(encodeURIComponent(name)) && r.path.includes('alt=media')).length;
}

/** A second function instance whose Cloud Storage traffic crosses a fault proxy (which logs it); both are stopped after `body`. */
async function withGcsFaults(
  body: (gcsProxy: FaultProxy, instance: RunningFunction) => Promise<void>,
  target: 'buildOnUpload' | 'rebuildOnMessage' = 'buildOnUpload',
  env: Record<string, string> = {},
): Promise<void> {
  const gcsProxy = await startFaultProxy(gcs.url);
  const instance = await startFunction({ target, env: { ...functionEnv(), ...env, STORAGE_EMULATOR_HOST: gcsProxy.url } });
  try {
    await body(gcsProxy, instance);
  } finally {
    await instance.stop();
    await gcsProxy.stop();
  }
}

after(async () => {
  await Promise.allSettled([fn?.stop(), proxy?.stop(), registry?.stop(), baseRegistry?.stop(), md?.stop(), gcs?.stop()]);
});

describe('buildOnUpload', { concurrency: false }, () => {
  test('objects beside the spec: pushed, the record on the spec object names the digest the registry has', async () => {
    await upload('hello/bin/hello.sh', '#!/bin/sh\necho hello from the bucket\n');
    await upload('hello/conf/a.txt', 'A');
    await upload('hello/conf/sub/b.txt', 'B');
    const spec = await uploadSpec('hello/artificer.json', {
      target: target('apps/hello'),
      tags: ['latest'],
      files: [{ from: 'bin/hello.sh', to: '/usr/local/bin/hello', mode: '0755' }, { from: 'conf/', to: '/etc/hello/' }],
      cmd: ['/usr/local/bin/hello'],
    });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, res.body);
    const rec = await record('hello/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-generation'], spec.generation);
    assert.match(rec['artificer-digest']!, /^sha256:[a-f0-9]{64}$/);
    assert.equal(rec['artificer-digest'], await registryDigest('apps/hello', 'v1'));
    assert.equal(rec['artificer-digest'], await registryDigest('apps/hello', 'latest'));
    assert.equal(rec['artificer-image'], `${proxy.host}/apps/hello@${rec['artificer-digest']}`);
    assert.deepEqual(rec['artificer-tags']!.split(',').sort(), [target('apps/hello', 'latest'), target('apps/hello')].sort());
    assert.ok(!Number.isNaN(Date.parse(rec['artificer-built-at']!)));
    assert.equal(rec['artificer-error'], undefined);
    // One JSON summary line per event with what Cloud Logging needs.
    const line = await fn.waitForLog((l) => l.spec === `gs://${BUCKET}/hello/artificer.json` && l.outcome === 'succeeded');
    assert.equal(line.severity, 'INFO');
    assert.equal(line.digest, rec['artificer-digest']);
    assert.equal(typeof line.durationMs, 'number');
    assert.equal(line.objectBytes, '#!/bin/sh\necho hello from the bucket\n'.length + 2);
    // The registry only ever saw the service account's token from the metadata server.
    const tokenUsers = new Set(registry.tokenServer!.requests.filter((r) => r.granted).map((r) => r.username));
    assert.ok(tokenUsers.has('oauth2accesstoken'));
    assert.ok(md.issued.length >= 1);
  });

  test("a folder item adds its subfolders as directories, not the destination (the base's)", async () => {
    const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [{ from: 'conf/', to: '/etc/hello/' }] })), 'mem');
    const { source } = await pinGcsSource({ bucket, specName: 'hello/artificer.json', files: spec.files });
    const entries = [];
    for await (const e of source()) entries.push([e.path, e.type, e.mode.toString(8)]);
    assert.deepEqual(entries, [
      ['etc/hello/a.txt', 'file', '644'],
      ['etc/hello/sub', 'directory', '755'],
      ['etc/hello/sub/b.txt', 'file', '644'],
    ]);
  });

  test('a duplicate event for a recorded generation does nothing', async () => {
    const [meta] = await bucket.file('hello/artificer.json').getMetadata();
    const before = await record('hello/artificer.json');
    const pushesBefore = proxy.requests.filter((r) => r.method === 'PUT').length;
    const res = await deliverStorageEvent(fn.url, objectEventData(meta as Record<string, unknown>));
    assert.equal(res.status, 204);
    assert.deepEqual(await record('hello/artificer.json'), before);
    assert.equal(proxy.requests.filter((r) => r.method === 'PUT').length, pushesBefore, 'nothing pushed');
    await fn.waitForLog((l) => l.spec === `gs://${BUCKET}/hello/artificer.json` && l.outcome === 'duplicate');
  });

  test('two uploads of the same spec racing: the record describes the newest generation', async () => {
    await upload('race/app.txt', 'race');
    const first = await uploadSpec('race/artificer.json', { target: target('apps/race', 'one'), files: ['app.txt'], env: { V: '1' } });
    const second = await uploadSpec('race/artificer.json', { target: target('apps/race', 'two'), files: ['app.txt'], env: { V: '2' } });
    assert.notEqual(first.generation, second.generation);
    // Deliver the newer event first, then the stale one, concurrently.
    const [a, b] = await Promise.all([deliverStorageEvent(fn.url, objectEventData(second)), deliverStorageEvent(fn.url, objectEventData(first))]);
    assert.equal(a.status, 204);
    assert.equal(b.status, 204);
    const rec = await record('race/artificer.json');
    assert.equal(rec['artificer-generation'], second.generation);
    assert.equal(rec['artificer-digest'], await registryDigest('apps/race', 'two'));
    assert.equal(await registryDigest('apps/race', 'one'), undefined, 'the superseded generation was not built');
    await fn.waitForLog((l) => l.generation === first.generation && l.outcome === 'superseded');
  });

  test('an older upload whose build ends after a newer one does not move the tags back', async () => {
    await upload('slowrace/app.txt', 'slowrace');
    const older = await uploadSpec('slowrace/artificer.json', { target: target('apps/slowrace'), files: ['app.txt'], env: { V: '1' } });
    // Hold the older build's layer upload until the newer generation has been built and tagged.
    proxy.failNext(1, { delayMs: 3000, method: 'PATCH' });
    const olderRun = deliverStorageEvent(fn.url, objectEventData(older));
    for (let i = 0; i < 200 && !proxy.requests.some((q) => q.method === 'PATCH' && q.fault === 'delay'); i++) await new Promise((r) => setTimeout(r, 25));
    const newer = await uploadSpec('slowrace/artificer.json', { target: target('apps/slowrace'), files: ['app.txt'], env: { V: '2' } });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(newer))).status, 204);
    const tagged = await registryDigest('apps/slowrace', 'v1');
    assert.equal((await olderRun).status, 204);
    const line = await fn.waitForLog((l) => l.generation === older.generation && l.spec === `gs://${BUCKET}/slowrace/artificer.json`);
    assert.equal(line.outcome, 'superseded', JSON.stringify(line));
    const rec = await record('slowrace/artificer.json');
    assert.equal(rec['artificer-generation'], newer.generation);
    assert.equal(await registryDigest('apps/slowrace', 'v1'), tagged, 'the tag still names the newer build');
    assert.equal(rec['artificer-digest'], tagged, 'and the record names what the tag points at');
  });

  test('a tag refused after another was written: the record says failed, with exactly the tags that moved', async () => {
    await upload('partial/app.txt', 'partial');
    const spec = await uploadSpec('partial/artificer.json', { target: target('apps/partial'), tags: ['two'], files: ['app.txt'] });
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/manifests\/two$/ });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, res.body);
    const rec = await record('partial/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.match(rec['artificer-error']!, /only some tags were pushed/);
    assert.equal(rec['artificer-tags'], target('apps/partial'));
    assert.equal(rec['artificer-digest'], await registryDigest('apps/partial', 'v1'));
    assert.equal(await registryDigest('apps/partial', 'two'), undefined);
  });

  test('a record Cloud Storage refuses for good is logged, and the event acknowledged (no rebuild loop)', async () => {
    await withGcsFaults(async (gcsProxy, fn2) => {
      await upload('norecord/app.txt', 'norecord');
      const spec = await uploadSpec('norecord/artificer.json', { target: target('apps/norecord'), files: ['app.txt'] });
      gcsProxy.failNext(1, { pass: true, method: 'PATCH' }); // the run's claim goes through
      gcsProxy.failNext(10, { status: 403, method: 'PATCH' });
      const res = await deliverStorageEvent(fn2.url, objectEventData(spec));
      assert.equal(res.status, 204, fn2.output().slice(-1500));
      const line = await fn2.waitForLog((l) => l.spec === `gs://${BUCKET}/norecord/artificer.json`);
      assert.equal(line.severity, 'ERROR');
      assert.equal(line.outcome, 'succeeded');
      assert.equal(line.recorded, false);
      assert.match(String(line.message), /but the record could not be written/);
      assert.equal(line.digest, await registryDigest('apps/norecord', 'v1'));
      assert.deepEqual(await record('norecord/artificer.json'), {});
      // A failed build whose record is refused: said the same way.
      const broken = await uploadSpec('norecord/broken.artificer.json', { target: target('apps/norecord'), files: ['nope.txt'] });
      gcsProxy.failNext(1, { pass: true, method: 'PATCH' });
      gcsProxy.failNext(10, { status: 403, method: 'PATCH' });
      assert.equal((await deliverStorageEvent(fn2.url, objectEventData(broken), { time: new Date(Date.now() - 5 * 60_000) })).status, 204);
      const failed = await fn2.waitForLog((l) => l.spec === `gs://${BUCKET}/norecord/broken.artificer.json`);
      assert.equal(failed.outcome, 'failed');
      assert.equal(failed.recorded, false);
      assert.match(String(failed.message), /the record could not be written/);
    });
  });

  // fake-gcs-server ignores metadata-PATCH preconditions (checked in test/support/gcs.ts), so
  // Cloud Storage's answer to a lost race, 412, is injected in front of it; the requests that
  // reach the proxy show the preconditions are on the wire with the values just read.
  test('a record write that loses a race (412) is re-read and retried; one that always loses is not recorded', async () => {
    await withGcsFaults(async (gcsProxy, fn2) => {
      await upload('raced/app.txt', 'raced');
      const spec = await uploadSpec('raced/artificer.json', { target: target('apps/raced'), files: ['app.txt'] });
      gcsProxy.failNext(1, { pass: true, method: 'PATCH' }); // the run's claim
      gcsProxy.failNext(2, { status: 412, method: 'PATCH' });
      assert.equal((await deliverStorageEvent(fn2.url, objectEventData(spec))).status, 204, fn2.output().slice(-1500));
      const line = await fn2.waitForLog((l) => l.spec === `gs://${BUCKET}/raced/artificer.json`);
      assert.equal(line.outcome, 'succeeded');
      assert.notEqual(line.recorded, false);
      const rec = await record('raced/artificer.json');
      assert.equal(rec['artificer-status'], 'succeeded');
      assert.equal(rec['artificer-digest'], await registryDigest('apps/raced', 'v1'));
      const [meta] = await bucket.file('raced/artificer.json').getMetadata();
      const patches = gcsProxy.requests.filter((r) => r.method === 'PATCH');
      assert.deepEqual(patches.map((r) => r.status), [200, 412, 412, 200]);
      for (const p of patches) {
        const q = new URL(p.path, 'http://x').searchParams;
        assert.equal(q.get('ifGenerationMatch'), String(meta.generation), p.path);
        assert.equal(q.get('ifMetagenerationMatch'), '1', p.path);
      }

      // Losing every time: bounded (six writes), then said plainly, and the event acknowledged.
      gcsProxy.reset();
      const again = await uploadSpec('raced/again.artificer.json', { target: target('apps/raced', 'v2'), files: ['app.txt'] });
      gcsProxy.failNext(1, { pass: true, method: 'PATCH' });
      gcsProxy.failNext(100, { status: 412, method: 'PATCH' });
      assert.equal((await deliverStorageEvent(fn2.url, objectEventData(again))).status, 204);
      const lost = await fn2.waitForLog((l) => l.spec === `gs://${BUCKET}/raced/again.artificer.json`);
      assert.equal(lost.outcome, 'succeeded');
      assert.equal(lost.recorded, false);
      assert.match(String(lost.message), /the record could not be written/);
      assert.equal(gcsProxy.requests.filter((r) => r.method === 'PATCH').length, 1 + 6);
      assert.deepEqual(await record('raced/again.artificer.json'), {});
    });
  });

  test('a bundle object is re-packed into the layer', async () => {
    await upload(
      'bundled/dist.tar.gz',
      await tarBundle(
        [
          { header: { name: 'app/', type: 'directory', mode: 0o755 } },
          { header: { name: 'app/run.sh', mode: 0o755 }, body: '#!/bin/sh\necho from bundle\n' },
          { header: { name: 'app/link', type: 'link', linkname: 'app/run.sh' } },
          { header: { name: 'app/sym', type: 'symlink', linkname: 'run.sh' } },
        ],
        true,
      ),
    );
    const spec = await uploadSpec('bundled/svc.artificer.json', { target: target('apps/bundled'), files: [{ bundle: 'dist.tar.gz', to: '/opt' }] });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, res.body);
    const rec = await record('bundled/svc.artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], await registryDigest('apps/bundled', 'v1'));
  });

  test("a bundle bomb of long names is refused by the function's layer limits and recorded as failed", { timeout: 120_000 }, async () => {
    // ~250 KB of .tar.gz, 36 MB of paths: past LAYER_LIMITS' 32 MiB, which only the function applies.
    const dir = 'a'.repeat(3990);
    const entries = Array.from({ length: 9000 }, (_, i) => ({ header: { name: 'f', size: 0, pax: { path: `${dir}/${i}` } }, body: '' }));
    await upload('bomb/names.tar.gz', await tarBundle(entries, true));
    const spec = await uploadSpec('bomb/artificer.json', { target: target('apps/bomb'), files: [{ bundle: 'names.tar.gz', to: '/app' }] });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, res.body);
    const rec = await record('bomb/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.match(rec['artificer-error']!, new RegExp(`the paths of the layer's files and directories add up to more than ${MAX_LAYER_PATH_BYTES} bytes`));
  });

  test('a non-spec object is acknowledged at once and ignored', async () => {
    const meta = await upload('hello/readme.txt', 'x');
    const res = await deliverStorageEvent(fn.url, objectEventData(meta));
    assert.equal(res.status, 204);
    assert.deepEqual(await record('hello/readme.txt'), {});
  });

  test('a transient registry failure throws (500 → Eventarc retries); the retried event succeeds', async () => {
    await upload('flaky/app.txt', 'flaky');
    const spec = await uploadSpec('flaky/artificer.json', { target: target('apps/flaky'), files: ['app.txt'] });
    proxy.failNext(1, { status: 503, match: /\/manifests\/v1$/, method: 'PUT' });
    const first = await deliverStorageEvent(fn.url, objectEventData(spec), { id: 'flaky-1' });
    assert.equal(first.status, 500, 'the handler threw');
    assert.equal(proxy.pendingFaults(), 0);
    assert.deepEqual(await record('flaky/artificer.json'), {}, 'no record before the manifest is pushed');
    const retry = await deliverStorageEvent(fn.url, objectEventData(spec), { id: 'flaky-1' });
    assert.equal(retry.status, 204);
    const rec = await record('flaky/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded');
    assert.equal(rec['artificer-digest'], await registryDigest('apps/flaky', 'v1'));
  });

  test('a transient failure of an event older than ARTIFICER_MAX_EVENT_AGE is recorded as failed', async () => {
    await upload('old/app.txt', 'old');
    const spec = await uploadSpec('old/artificer.json', { target: target('apps/old'), files: ['app.txt'] });
    // Young enough to be built (600 s is the limit), past the limit when the push fails.
    proxy.failNext(1, { status: 503, match: /\/manifests\/v1$/, method: 'PUT', delayMs: 4000 });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec), { time: new Date(Date.now() - 598_000) });
    assert.equal(res.status, 204);
    const rec = await record('old/artificer.json');
    assert.equal(rec['artificer-status'], 'failed');
    assert.match(rec['artificer-error']!, /gave up after retrying/);
    assert.equal(rec['artificer-digest'], undefined);
  });

  test('an event past ARTIFICER_MAX_EVENT_AGE whose generation has an unfinished attempt since (a killed run) is recorded as failed, not built', async () => {
    await upload('killed/app.txt', 'killed');
    const spec = await uploadSpec('killed/artificer.json', { target: target('apps/killed'), files: ['app.txt'] });
    const time = new Date(Date.now() - 700_000);
    const attempt = Date.now();
    await leaveKilledClaim('killed/artificer.json', attempt);
    proxy.reset();
    const res = await deliverStorageEvent(fn.url, objectEventData(spec), { time });
    assert.equal(res.status, 204, 'acknowledged: Eventarc stops redelivering');
    const rec = await record('killed/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.equal(rec['artificer-generation'], spec.generation);
    assert.ok(
      rec['artificer-error']!.startsWith(
        `earlier attempts since ${time.toISOString()} (the last started at ${new Date(attempt).toISOString()}) did not finish for longer than ARTIFICER_MAX_EVENT_AGE (600 s; the event is `,
      ),
      rec['artificer-error'],
    );
    assert.match(
      rec['artificer-error']!,
      /the event is 70\d s old\): killed by timeout\/memory, or failed for a reason worth retrying \(no tag was moved by this build; a run before this one that did not finish may have moved tags\)$/,
    );
    assert.equal(rec['artificer-digest'], undefined, 'no image is known');
    assert.deepEqual(proxy.requests.filter((r) => r.path.includes('/apps/killed/')), [], 'nothing was built');
  });

  test('an event past ARTIFICER_MAX_EVENT_AGE that was never attempted (a backlog) builds as usual', async () => {
    await upload('backlog/app.txt', 'backlog');
    const spec = await uploadSpec('backlog/artificer.json', { target: target('apps/backlog'), files: ['app.txt'] });
    // An attempt on the previous generation, its claim copied with the metadata: no evidence for this one.
    await leaveKilledClaim('backlog/artificer.json', Date.parse(String(spec.timeCreated)) - 1000);
    const res = await deliverStorageEvent(fn.url, objectEventData(spec), { time: new Date(Date.now() - 700_000) });
    assert.equal(res.status, 204, res.body);
    const rec = await record('backlog/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], await registryDigest('apps/backlog', 'v1'));
  });

  test('a build that outlives ARTIFICER_BUILD_TIMEOUT is abandoned and recorded as failed, nothing tagged', async () => {
    const slow = await startFunction({ target: 'buildOnUpload', env: { ...functionEnv(), ARTIFICER_BUILD_TIMEOUT: '2' } });
    try {
      await upload('slow/app.txt', 'slow');
      const spec = await uploadSpec('slow/artificer.json', { target: target('apps/slow'), files: ['app.txt'] });
      proxy.failNext(1, { delayMs: 5000, method: 'PATCH' });
      const res = await deliverStorageEvent(slow.url, objectEventData(spec));
      assert.equal(res.status, 204, 'recorded, not retried');
      const rec = await record('slow/artificer.json');
      assert.equal(rec['artificer-status'], 'failed');
      assert.match(rec['artificer-error']!, /did not finish within 2 s \(ARTIFICER_BUILD_TIMEOUT\); nothing was tagged/);
      assert.equal(await registryDigest('apps/slow', 'v1'), undefined);
    } finally {
      proxy.reset();
      await slow.stop();
    }
  });

  const mistakes: Array<[string, () => Promise<Record<string, unknown>>, RegExp]> = [
    ['an unknown spec field', () => uploadSpec('bad1/artificer.json', { target: target('apps/bad'), entryponit: ['x'] }), /unknown field "entryponit"/],
    ['a spec that is not JSON', () => upload('bad2/artificer.json', '{"base":'), /not valid JSON/],
    ['a missing file', () => uploadSpec('bad3/artificer.json', { target: target('apps/bad'), files: ['nope.txt'] }), /bad3\/nope\.txt: no such object/],
    ['a target outside the allow-list', () => uploadSpec('bad4/artificer.json', { target: `${proxy.host}/elsewhere/app:v1` }), /not in ARTIFICER_ALLOWED_TARGETS/],
    ['a tag outside the allow-list', () => uploadSpec('bad5/artificer.json', { target: target('apps/x'), tags: [`${proxy.host}/apps-evil/x:1`] }), /apps-evil\/x is not in ARTIFICER_ALLOWED_TARGETS/],
    ['a base that does not exist', () => upload('bad6/artificer.json', JSON.stringify({ base: `${baseRegistry.host}/base/nothing:1`, target: target('apps/bad') })), /not found/],
    ['a push the registry denies', () => uploadSpec('bad7/artificer.json', { target: target('readonly/app') }), /denied|unauthorized/i],
    ['an object under a folder whose name climbs out of it', async () => {
      await upload('bad9/conf/../../../etc/cron.d/evil', '* * * * * root sh');
      return uploadSpec('bad9/artificer.json', { target: target('apps/bad'), files: [{ from: 'conf/', to: '/srv/conf/' }] });
    }, /object name has a "\." or "\.\." segment/],
    // Refused on the size in its metadata, before a byte is downloaded (a spec is read whole).
    ['a spec over 1 MiB', () => upload('bad8/artificer.json', `{"base":"${'x'.repeat(1024 * 1024)}"}`), /is 1048587 bytes; a spec may be at most 1048576 bytes/],
  ];
  for (const [name, make, message] of mistakes) {
    test(`user mistake, recorded as failed and acknowledged: ${name}`, async () => {
      const spec = await make();
      // Five minutes after the upload: past the grace for files uploaded after their spec.
      const res = await deliverStorageEvent(fn.url, objectEventData(spec), { time: new Date(Date.now() - 5 * 60_000) });
      assert.equal(res.status, 204, res.body);
      const rec = await record(spec.name as string);
      assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
      assert.match(rec['artificer-error']!, message);
      assert.ok(Buffer.byteLength(rec['artificer-error']!) <= 1024);
      assert.equal(rec['artificer-generation'], spec.generation);
    });
  }

  test('files uploaded after their spec (cp -r order): the event is retried until they are there and quiet, then builds', async () => {
    const spec = await uploadSpec('late/artificer.json', { target: target('apps/late'), files: ['app.txt', 'conf/'] });
    const early = await deliverStorageEvent(fn.url, objectEventData(spec), { id: 'late-1' });
    assert.equal(early.status, 500, 'thrown: Eventarc retries');
    assert.deepEqual(await record('late/artificer.json'), {}, 'no record yet');
    const line = await fn.waitForLog((l) => l.spec === `gs://${BUCKET}/late/artificer.json` && l.retry === true);
    assert.match(String(line.message), /not uploaded yet, the event will be retried: .*late\/app\.txt/);
    await upload('late/app.txt', 'late');
    await upload('late/conf/a.conf', 'a');
    // Every file is there now, but created after the spec, moments ago: the upload may go on.
    const seen = fn.logs().length;
    const during = await deliverStorageEvent(fn.url, objectEventData(spec), { id: 'late-1' });
    assert.equal(during.status, 500, 'files newer than the spec, and recent: retried');
    assert.deepEqual(await record('late/artificer.json'), {}, 'still no record');
    await fn.waitForLog(() => fn.logs().slice(seen).some((l) => l.retry === true));
    const waiting = fn.logs().slice(seen).find((l) => l.retry === true)!;
    assert.match(String(waiting.message), /still being uploaded, the event will be retried: .*late\/conf\/a\.conf: was created [\d.]+ s after the spec, .*upload the spec last/);
    // A file replaced in the meantime is the one built: objects are pinned when the build starts.
    await upload('late/app.txt', 'late, replaced');
    await new Promise((r) => setTimeout(r, UPLOAD_QUIET_MS + 200));
    const retried = await deliverStorageEvent(fn.url, objectEventData(spec), { id: 'late-1' });
    assert.equal(retried.status, 204);
    const rec = await record('late/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    const built = await fn.waitForLog((l) => l.spec === `gs://${BUCKET}/late/artificer.json` && l.outcome === 'succeeded');
    assert.equal(built.objectBytes, 'late, replaced'.length + 1);
  });

  test('files uploaded after their spec, moments before a delivery past the 3-minute grace: built as they are, with a warning', async () => {
    const spec = await uploadSpec('lateold/artificer.json', { target: target('apps/lateold'), files: ['app.txt'] });
    await upload('lateold/app.txt', 'late and old');
    const seen = fn.logs().length;
    // A late delivery (a backlog, a retry): the event is 4 minutes old, the file seconds.
    const res = await deliverStorageEvent(fn.url, objectEventData(spec), { time: new Date(Date.now() - 4 * 60_000) });
    assert.equal(res.status, 204, res.body);
    const rec = await record('lateold/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], await registryDigest('apps/lateold', 'v1'));
    const warning = fn.logs().slice(seen).find((l) => l.severity === 'WARNING' && l.spec === `gs://${BUCKET}/lateold/artificer.json`);
    assert.ok(warning, 'a WARNING says the upload was not waited for');
    assert.equal(warning.newest, 'lateold/app.txt');
    assert.match(String(warning.message), /lateold\/app\.txt was created [\d.]+ s ago, after the spec: building the objects as they are now/);
  });

  test('files uploaded before their spec (the spec last, as a commit marker): built at once, no wait', async () => {
    await upload('first/app.txt', 'first');
    await upload('first/conf/a.conf', 'a');
    const spec = await uploadSpec('first/artificer.json', { target: target('apps/first'), files: ['app.txt', 'conf/'] });
    const started = Date.now();
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, res.body);
    assert.ok(Date.now() - started < UPLOAD_QUIET_MS, 'no quiet period waited for');
    assert.equal((await record('first/artificer.json'))['artificer-status'], 'succeeded');
  });

  const badBundles: Array<[string, Array<{ header: Record<string, unknown>; body?: string }>, RegExp]> = [
    ['a .. entry', [{ header: { name: '../evil' }, body: 'x' }], /"\.\."/],
    ['an absolute entry', [{ header: { name: '/etc/passwd' }, body: 'x' }], /absolute path/],
    ['a hardlink out of the bundle', [{ header: { name: 'l', type: 'link', linkname: 'etc/shadow' } }], /hardlink/],
    ['a device', [{ header: { name: 'dev', type: 'character-device', devmajor: 1, devminor: 3 } }], /device/],
    ['a FIFO', [{ header: { name: 'f', type: 'fifo' } }], /FIFO/],
  ];
  for (const [name, entries, message] of badBundles) {
    test(`bundle with ${name} is rejected and recorded`, async () => {
      const dir = `badbundle-${name.replace(/\W+/g, '-')}`;
      await upload(`${dir}/b.tar`, await tarBundle(entries, false));
      const spec = await uploadSpec(`${dir}/artificer.json`, { target: target('apps/bb'), files: [{ bundle: 'b.tar' }] });
      const res = await deliverStorageEvent(fn.url, objectEventData(spec));
      assert.equal(res.status, 204, res.body);
      const rec = await record(`${dir}/artificer.json`);
      assert.equal(rec['artificer-status'], 'failed');
      assert.match(rec['artificer-error']!, message);
    });
  }

  test('a truncated bundle (size mismatch) is rejected', async () => {
    const full = await tarBundle([{ header: { name: 'big' }, body: 'y'.repeat(5000) }], false);
    await upload('trunc/b.tar', full.subarray(0, 2048));
    const spec = await uploadSpec('trunc/artificer.json', { target: target('apps/bb'), files: [{ bundle: 'b.tar' }] });
    const res = await deliverStorageEvent(fn.url, objectEventData(spec));
    assert.equal(res.status, 204, fn.output().slice(-1500));
    const rec = await record('trunc/artificer.json');
    assert.equal(rec['artificer-status'], 'failed');
    assert.match(rec['artificer-error']!, /b\.tar/);
  });

  test('no access token ever appears in the logs or the records', async () => {
    assert.ok(md.issued.length > 0);
    const [files] = await bucket.getFiles();
    const records = JSON.stringify(files.map((f) => f.metadata.metadata ?? {}));
    for (const token of md.issued) {
      assert.ok(!fn.output().includes(token), 'token in function output');
      assert.ok(!records.includes(token), 'token in a record');
    }
    assert.ok(!fn.output().includes(ADMIN_PW));
  });
});

describe('the function process', { concurrency: false }, () => {
  test('prints no Node warning: @google-cloud/storage 8.4 set off two for every download of 64 KiB or more', async () => {
    await upload('warnings/a.bin', randomBytes(200 * 1024));
    await upload('warnings/b.bin', randomBytes(2 * 1024 * 1024));
    const spec = await uploadSpec('warnings/artificer.json', { target: target('apps/warnings'), files: ['a.bin', 'b.bin'] });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(spec))).status, 204);
    assert.equal((await record('warnings/artificer.json'))['artificer-status'], 'succeeded');
    assert.doesNotMatch(fn.output(), /Warning/);
  });
});

describe('rebuildOnMessage: temporary failures stop at ARTIFICER_MAX_EVENT_AGE', { concurrency: false }, () => {
  const OLD = (): Date => new Date(Date.now() - 700_000); // the limit is 600 s
  const fanoutEnv = async (): Promise<Record<string, string>> => ({
    ARTIFICER_REBUILD_PREFIX: `gs://${BUCKET}/agefan/`,
    ARTIFICER_REBUILD_TOPIC: 'projects/p/topics/artificer-rebuild',
    // Nothing listens there: every publish fails with a connection error (temporary).
    PUBSUB_EMULATOR_HOST: `127.0.0.1:${await freePort()}`,
  });
  const deliver = (instance: RunningFunction, payload: unknown, time: Date): Promise<{ status: number; body: string }> =>
    deliverPubsubEvent(instance.url, 'projects/p/topics/artificer-rebuild', payload, { id: `age-${Date.now()}-${Math.random()}`, time });

  test('an old rebuild message of a generation whose last attempt finished (a backlog, not a killed run) is rebuilt', async () => {
    await upload('agequeue/app.txt', 'agequeue');
    const spec = await uploadSpec('agequeue/artificer.json', { target: target('apps/agequeue'), files: ['app.txt'] });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(spec))).status, 204);
    const before = await record('agequeue/artificer.json');
    assert.equal(before['artificer-status'], 'succeeded');
    await withGcsFaults(
      async (_gcsProxy, rebuild) => {
        // Queued long ago (a base-image fan-out's backlog); the upload's run since then recorded.
        assert.equal((await deliver(rebuild, { bucket: BUCKET, object: 'agequeue/artificer.json' }, OLD())).status, 204);
        const line = await rebuild.waitForLog((l) => l.spec === `gs://${BUCKET}/agequeue/artificer.json` && typeof l.outcome === 'string');
        assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      },
      'rebuildOnMessage',
      await fanoutEnv(),
    );
    const after = await record('agequeue/artificer.json');
    assert.equal(after['artificer-status'], 'succeeded');
    assert.notEqual(after['artificer-built-at'], before['artificer-built-at'], 'a new record: rebuilt');
  });

  /** A spec built by its upload, then the claim of a rebuild that was killed (started after that record). */
  const builtThenKilled = async (folder: string): Promise<{ first: Record<string, string>; claim: string }> => {
    await upload(`${folder}/app.txt`, folder);
    const spec = await uploadSpec(`${folder}/artificer.json`, { target: target(`apps/${folder}`), files: ['app.txt'] });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(spec))).status, 204);
    const first = await record(`${folder}/artificer.json`);
    assert.equal(first['artificer-status'], 'succeeded');
    await new Promise((r) => setTimeout(r, 5)); // the killed run starts after the record was written
    await leaveKilledClaim(`${folder}/artificer.json`);
    return { first, claim: (await claimOf(`${folder}/artificer.json`))! };
  };
  /** The first summary line of `object` that `instance` logged after its `seen` first lines. */
  const lineAfter = async (instance: RunningFunction, seen: number, object: string): Promise<Record<string, unknown>> => {
    const summary = (l: Record<string, unknown>): boolean => l.spec === `gs://${BUCKET}/${object}` && typeof l.outcome === 'string';
    await instance.waitForLog(() => instance.logs().slice(seen).some(summary));
    return instance.logs().slice(seen).find(summary)!;
  };
  /** Delivers a rebuild message of `payload.object` to `instance`; its summary line. */
  const rebuildLine = async (instance: RunningFunction, payload: { bucket: string; object: string; base?: string }, time: Date): Promise<Record<string, unknown>> => {
    const seen = instance.logs().length;
    assert.equal((await deliver(instance, payload, time)).status, 204, 'acknowledged: not redelivered');
    return lineAfter(instance, seen, payload.object);
  };
  const LAYER_KEYS = ['artificer-layer', 'artificer-layer-diffid', 'artificer-layer-size', 'artificer-layer-inputs'];

  test('an old rebuild of a recorded generation whose last attempt did not finish is not built again; the record says it failed, and keeps no image', async () => {
    const { first } = await builtThenKilled('agefan');
    const time = OLD();
    proxy.reset();
    await withGcsFaults(
      async (gcsProxy, rebuild) => {
        const line = await rebuildLine(rebuild, { bucket: BUCKET, object: 'agefan/artificer.json', base }, time);
        assert.equal(line.outcome, 'failed', JSON.stringify(line));
        assert.equal(line.severity, 'ERROR');
        assert.match(String(line.message), /not rebuilt: .*did not finish for longer than ARTIFICER_MAX_EVENT_AGE .*: killed by timeout\/memory, or failed for a reason worth retrying/);
        assert.deepEqual(proxy.requests.filter((r) => r.path.includes('/apps/agefan/')), [], 'nothing was built');

        const rec = await record('agefan/artificer.json');
        assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
        assert.equal(rec['artificer-generation'], first['artificer-generation']);
        assert.notEqual(rec['artificer-built-at'], first['artificer-built-at']);
        assert.equal(rec['artificer-base'], first['artificer-base'], 'the base of the spec, which was not read, is kept for the fan-out');
        // The killed run may have moved the tag: the record names no image (the null deletes,
        // which fake-gcs-server stores as "").
        for (const key of ['artificer-digest', 'artificer-image', 'artificer-tags', ...LAYER_KEYS]) assert.ok(!rec[key], key);
        assert.ok(rec['artificer-error']!.startsWith(`not rebuilt: earlier attempts since ${time.toISOString()} (the last started at `), rec['artificer-error']);
        assert.ok(
          rec['artificer-error']!.endsWith(
            `killed by timeout/memory, or failed for a reason worth retrying (no tag was moved by this build; the tags recorded beside ${first['artificer-digest']} at ${first['artificer-built-at']} named it then, and a run since that did not finish may have moved them)`,
          ),
          rec['artificer-error'],
        );

        // The next base update rebuilds as usual; with no image recorded it takes no layer from
        // the registry but makes it again from the objects (the same layer, they did not change).
        const next = await rebuildLine(rebuild, { bucket: BUCKET, object: 'agefan/artificer.json', base }, new Date());
        assert.equal(next.outcome, 'succeeded', JSON.stringify(next));
        assert.equal(next.layerReused, false);
        assert.equal(downloads(gcsProxy, 'agefan/app.txt'), 1);
        const after = await record('agefan/artificer.json');
        assert.equal(after['artificer-status'], 'succeeded', JSON.stringify(after));
        assert.equal(after['artificer-digest'], await registryDigest('apps/agefan', 'v1'));
        for (const key of LAYER_KEYS) assert.equal(after[key], first[key], key);
      },
      'rebuildOnMessage',
      await fanoutEnv(),
    );
  });

  test('an old rebuild whose unfinished attempts vouched they moved no tag: failed, the earlier image kept, and the next rebuild takes its layer', async () => {
    const { first, claim } = await builtThenKilled('agevouch');
    // What a run that threw to be retried before its first tag leaves (markUntagged).
    await bucket.file('agevouch/artificer.json').setMetadata({ metadata: { 'artificer-run-untagged': claim } });
    await withGcsFaults(
      async (gcsProxy, rebuild) => {
        const line = await rebuildLine(rebuild, { bucket: BUCKET, object: 'agevouch/artificer.json' }, OLD());
        assert.equal(line.outcome, 'failed', JSON.stringify(line));
        const rec = await record('agevouch/artificer.json');
        assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
        for (const key of ['artificer-digest', 'artificer-image', 'artificer-tags', 'artificer-base', 'artificer-generation', ...LAYER_KEYS]) assert.equal(rec[key], first[key], key);
        assert.match(rec['artificer-error']!, /^not rebuilt: earlier attempts since /);
        assert.ok(
          rec['artificer-error']!.endsWith(`(no tag was moved by this build; the tags recorded beside ${first['artificer-digest']} at ${first['artificer-built-at']} still name it)`),
          rec['artificer-error'],
        );
        assert.equal(await registryDigest('apps/agevouch', 'v1'), first['artificer-digest']);

        const next = await rebuildLine(rebuild, { bucket: BUCKET, object: 'agevouch/artificer.json' }, new Date());
        assert.equal(next.outcome, 'succeeded', JSON.stringify(next));
        assert.equal(next.layerReused, true, 'the kept layer is taken from the registry');
        assert.equal(downloads(gcsProxy, 'agevouch/app.txt'), 0);
      },
      'rebuildOnMessage',
      await fanoutEnv(),
    );
  });

  test('the spec cannot be read, the specs cannot be listed, the rebuilds cannot be queued: past the age, logged and acknowledged', async () => {
    await withGcsFaults(
      async (gcsProxy, rebuild) => {
        // [what, message, fault, error logged, whether the young message is tried too (the 503
        // cases take the storage client's own retries, seconds each: tried once, old)]
        const cases: Array<[string, unknown, () => void, RegExp, boolean?]> = [
          // 503 for as long as the storage client's own retries last.
          ['reading the spec', { bucket: BUCKET, object: 'agefan/artificer.json' }, () => gcsProxy.failNext(100, { status: 503, method: 'GET', match: /agefan%2Fartificer\.json/ }), /rebuild of .*agefan\/artificer\.json: gave up after retrying for \d+ s: .*reading the spec object metadata/],
          ['listing the specs', { action: 'INSERT', tag: base }, () => gcsProxy.failNext(100, { status: 503, method: 'GET', match: /\/o\?/ }), /the specs cannot be listed: gave up after retrying for \d+ s/],
          ['queueing the rebuilds', { action: 'INSERT', tag: base }, () => {}, /1 rebuild\(s\) could not be queued on .*: gave up after retrying for \d+ s/, true],
        ];
        for (const [what, payload, fault, message, young] of cases) {
          if (young) assert.equal((await deliver(rebuild, payload, new Date())).status, 500, `${what}: a young message comes back`);
          fault();
          const seen = rebuild.logs().length;
          assert.equal((await deliver(rebuild, payload, OLD())).status, 204, `${what}: an old one is acknowledged`);
          gcsProxy.reset();
          await rebuild.waitForLog(() => rebuild.logs().slice(seen).some((l) => l.severity === 'ERROR'));
          const errors = rebuild.logs().slice(seen).filter((l) => l.severity === 'ERROR');
          assert.equal(errors.length, 1, `${what}: ${JSON.stringify(errors)}`);
          assert.match(String(errors[0]!.message), message, what);
        }
      },
      'rebuildOnMessage',
      await fanoutEnv(),
    );
  });
});

describe('the record of an old event settled without a build: written only over what was read', { concurrency: false }, () => {
  const failed = { status: 'failed', error: 'not rebuilt: earlier attempts … did not finish' } as const;
  const succeeded = (n: string): BuildRecord => ({ status: 'succeeded', digest: `sha256:${n.repeat(64)}`, image: `r.example/app@sha256:${n.repeat(64)}`, tags: ['r.example/app:v1'] });

  test('over the record it read: written; a record written since (a run in progress finished): not', async () => {
    const meta = await uploadSpec('settle-guard/artificer.json', { target: target('apps/settle-guard'), files: ['app.txt'] });
    const generation = String(meta.generation);
    const file = bucket.file('settle-guard/artificer.json');
    assert.equal(await writeRecord(file, generation, succeeded('1'), undefined, new Date('2026-01-01T00:00:01Z')), 'written');
    const read = (await readState(file))!;
    const guard = { run: read.record['artificer-run'], unrecorded: { recordedAt: read.record['artificer-built-at'] } };
    assert.equal(await writeRecord(file, generation, failed, guard, new Date('2026-01-01T00:00:02Z')), 'written', 'the record read is still there');
    assert.equal((await record('settle-guard/artificer.json'))['artificer-status'], 'failed');

    const read2 = (await readState(file))!;
    // A run in progress, which the read could not tell from a killed one, records its outcome.
    assert.equal(await writeRecord(file, generation, succeeded('2'), undefined, new Date('2026-01-01T00:00:03Z')), 'written');
    const stale = { run: read2.record['artificer-run'], unrecorded: { recordedAt: read2.record['artificer-built-at'] } };
    assert.equal(await writeRecord(file, generation, failed, stale, new Date('2026-01-01T00:00:04Z')), 'duplicate');
    const rec = await record('settle-guard/artificer.json');
    assert.equal(rec['artificer-status'], 'succeeded', 'the outcome of the run that finished stays');
    assert.equal(rec['artificer-digest'], `sha256:${'2'.repeat(64)}`);

    // No record read: any record of the generation since stops it.
    assert.equal(await writeRecord(file, generation, failed, { run: undefined, unrecorded: { recordedAt: undefined } }), 'duplicate');
    // A newer upload: its own event records.
    const newer = await uploadSpec('settle-guard/artificer.json', { target: target('apps/settle-guard'), files: ['other.txt'] });
    assert.notEqual(String(newer.generation), generation);
    assert.equal(await writeRecord(file, generation, failed, guard), 'superseded');
  });
});

describe('rebuildOnMessage: the layer of the last build', { concurrency: false }, () => {
  let reuseBase: string;

  const withRebuild = (body: (rebuild: RunningFunction, gcsProxy: FaultProxy) => Promise<void>): Promise<void> =>
    withGcsFaults((gcsProxy, rebuild) => body(rebuild, gcsProxy), 'rebuildOnMessage');

  const rebuildOnce = async (rebuild: RunningFunction, object: string): Promise<Record<string, unknown>> => {
    const id = `rebuild-${Date.now()}-${Math.random()}`;
    const res = await deliverPubsubEvent(rebuild.url, 'projects/p/topics/artificer-rebuild', { bucket: BUCKET, object }, { id });
    assert.equal(res.status, 204, res.body);
    return rebuild.waitForLog((l) => l.spec === `gs://${BUCKET}/${object}` && typeof l.outcome === 'string');
  };

  test('a success records the layer; a rebuild of the same objects takes it from the registry without downloading them', async () => {
    await upload('reuse/app.bin', randomBytes(64 * 1024));
    await upload('reuse/conf/a.txt', 'a');
    // A base of its own, which a later test moves to a new image.
    reuseBase = (await pushBusyboxBase(baseRegistry.host, { repository: 'base/busybox', tag: 'reuse', format: 'docker' })).reference;
    const spec = await uploadSpec('reuse/artificer.json', { base: reuseBase, target: target('apps/reuse'), files: ['app.bin', 'conf/'], cmd: ['/app.bin'] });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(spec))).status, 204);
    const first = await record('reuse/artificer.json');
    assert.equal(first['artificer-status'], 'succeeded', JSON.stringify(first));
    const layer = await lastLayer('apps/reuse', 'v1');
    assert.equal(first['artificer-layer'], layer.digest, 'the recorded layer is the image\'s new layer');
    assert.equal(first['artificer-layer-size'], String(layer.size));
    assert.match(first['artificer-layer-diffid']!, /^sha256:[0-9a-f]{64}$/);
    assert.match(first['artificer-layer-inputs']!, /^[0-9a-f]{64}$/);

    await withRebuild(async (rebuild, gcsProxy) => {
      const line = await rebuildOnce(rebuild, 'reuse/artificer.json');
      assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      assert.equal(line.layerReused, true);
      assert.equal(line.objectBytes, 0);
      assert.equal(downloads(gcsProxy, 'reuse/app.bin') + downloads(gcsProxy, 'reuse/conf/a.txt'), 0, 'no artifact downloaded');
      assert.equal(downloads(gcsProxy, 'reuse/artificer.json'), 1, 'the spec itself was read');
    });
    const second = await record('reuse/artificer.json');
    // Same spec, same base, same layer: the very same image, recorded again.
    assert.equal(second['artificer-digest'], first['artificer-digest']);
    assert.equal(await registryDigest('apps/reuse', 'v1'), first['artificer-digest']);
    for (const key of ['artificer-layer', 'artificer-layer-diffid', 'artificer-layer-size', 'artificer-layer-inputs']) assert.equal(second[key], first[key], key);
    assert.notEqual(second['artificer-built-at'], first['artificer-built-at']);
  });

  test('a new base: the recorded layer goes on top of it, with nothing downloaded from the bucket', async () => {
    const before = await record('reuse/artificer.json');
    // The base tag moves to an image with one more layer (and so a new config and manifest).
    await using dir = await tempDir('newbase');
    const extra = path.join(dir.path, 'extra.tar');
    await writeFile(extra, await tarBundle([{ header: { name: 'etc/base-release', mode: 0o644 }, body: 'v2\n' }], false));
    await exec(tool('crane'), ['append', '--base', reuseBase, '--new_layer', extra, '--new_tag', reuseBase]);
    const baseManifest = (await (await fetch(`${baseRegistry.url}/v2/base/busybox/manifests/reuse`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } })).json()) as { layers: Array<{ digest: string }> };
    assert.equal(baseManifest.layers.length, 2);

    await withRebuild(async (rebuild, gcsProxy) => {
      const line = await rebuildOnce(rebuild, 'reuse/artificer.json');
      assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      assert.equal(line.layerReused, true);
      assert.equal(downloads(gcsProxy, 'reuse/app.bin') + downloads(gcsProxy, 'reuse/conf/a.txt'), 0);
    });
    const after = await record('reuse/artificer.json');
    assert.notEqual(after['artificer-digest'], before['artificer-digest'], 'a new image');
    assert.equal(after['artificer-layer'], before['artificer-layer']);
    const res = await fetchManifest('apps/reuse', 'v1', 'GET');
    const built = (await res.json()) as { layers: Array<{ digest: string }> };
    assert.deepEqual(
      built.layers.map((l) => l.digest),
      [...baseManifest.layers.map((l) => l.digest), before['artificer-layer']],
      "the new base's layers, then the recorded one",
    );
  });

  test('a changed object (a new generation) is read again and gives a new layer', async () => {
    const before = await record('reuse/artificer.json');
    await upload('reuse/conf/a.txt', 'a, changed');
    await withRebuild(async (rebuild, gcsProxy) => {
      const line = await rebuildOnce(rebuild, 'reuse/artificer.json');
      assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      assert.equal(line.layerReused, false);
      assert.equal(downloads(gcsProxy, 'reuse/conf/a.txt'), 1);
      assert.equal(downloads(gcsProxy, 'reuse/app.bin'), 1, 'every object of the layer is read, not only the changed one');
    });
    const after = await record('reuse/artificer.json');
    assert.notEqual(after['artificer-layer-inputs'], before['artificer-layer-inputs']);
    assert.notEqual(after['artificer-layer'], before['artificer-layer']);
    assert.equal(after['artificer-layer'], (await lastLayer('apps/reuse', 'v1')).digest);
  });

  test('a recorded layer the registry does not hold is not trusted: the objects are read and the record corrected', async () => {
    const real = await record('reuse/artificer.json');
    const bogus = `sha256:${'0'.repeat(64)}`;
    await bucket.file('reuse/artificer.json').setMetadata({ metadata: { 'artificer-layer': bogus } });
    await withRebuild(async (rebuild, gcsProxy) => {
      const line = await rebuildOnce(rebuild, 'reuse/artificer.json');
      assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      assert.equal(line.layerReused, false);
      assert.equal(downloads(gcsProxy, 'reuse/app.bin'), 1);
    });
    const after = await record('reuse/artificer.json');
    assert.equal(after['artificer-layer'], real['artificer-layer']);
    assert.equal(after['artificer-digest'], real['artificer-digest']);
  });

  test('a failed rebuild names no layer but the one in the image it keeps, which the next rebuild takes', async () => {
    const before = await record('reuse/artificer.json');
    assert.ok(before['artificer-layer']);
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/apps\/reuse\/manifests\/v1$/ });
    await withRebuild(async (rebuild) => {
      const res = await deliverPubsubEvent(rebuild.url, 'projects/p/topics/artificer-rebuild', { bucket: BUCKET, object: 'reuse/artificer.json' });
      assert.equal(res.status, 204, res.body);
      await rebuild.waitForLog((l) => l.spec === `gs://${BUCKET}/reuse/artificer.json` && l.outcome === 'failed');
    });
    assert.equal(proxy.pendingFaults(), 0);
    const rec = await record('reuse/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    // No tag moved: the record keeps the image the tag names, with the layer that image holds.
    assert.equal(rec['artificer-digest'], await registryDigest('apps/reuse', 'v1'));
    assert.equal(rec['artificer-layer'], (await lastLayer('apps/reuse', 'v1')).digest);
    for (const key of ['artificer-digest', 'artificer-layer', 'artificer-layer-diffid', 'artificer-layer-size', 'artificer-layer-inputs']) assert.equal(rec[key], before[key], key);
    await withRebuild(async (rebuild, gcsProxy) => {
      const line = await rebuildOnce(rebuild, 'reuse/artificer.json');
      assert.equal(line.outcome, 'succeeded', JSON.stringify(line));
      assert.equal(line.layerReused, true, 'the kept layer is taken from the registry');
      assert.equal(downloads(gcsProxy, 'reuse/app.bin'), 0);
    });
  });
});

describe('a failed rebuild: the record says what the tags name', { concurrency: false }, () => {
  let rebuild: RunningFunction;
  before(async () => {
    rebuild = await startFunction({ target: 'rebuildOnMessage', env: functionEnv() });
  });
  after(async () => {
    proxy.reset();
    await rebuild?.stop();
  });
  const LAYER_KEYS = ['artificer-layer', 'artificer-layer-diffid', 'artificer-layer-size', 'artificer-layer-inputs'];
  /** A spec built by its upload, then one of its objects replaced (so a rebuild makes a new image). */
  const builtThenChanged = async (folder: string, spec: Record<string, unknown>): Promise<Record<string, string>> => {
    await upload(`${folder}/app.txt`, `${folder} one`);
    const meta = await uploadSpec(`${folder}/artificer.json`, { files: ['app.txt'], ...spec });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(meta))).status, 204);
    const first = await record(`${folder}/artificer.json`);
    assert.equal(first['artificer-status'], 'succeeded', JSON.stringify(first));
    await upload(`${folder}/app.txt`, `${folder} two`);
    return first;
  };
  /** Delivers a rebuild of `object`; for an acknowledged one, its summary line. */
  const rebuildOf = async (object: string, time = new Date()): Promise<{ status: number; line?: Record<string, unknown> }> => {
    const seen = rebuild.logs().length;
    const res = await deliverPubsubEvent(rebuild.url, 'projects/p/topics/artificer-rebuild', { bucket: BUCKET, object }, { id: `failed-rebuild-${randomUUID()}`, time });
    if (res.status !== 204) return { status: res.status };
    const summary = (l: Record<string, unknown>): boolean => l.spec === `gs://${BUCKET}/${object}` && typeof l.outcome === 'string' && l.retry === undefined;
    await rebuild.waitForLog(() => rebuild.logs().slice(seen).some(summary));
    return { status: res.status, line: rebuild.logs().slice(seen).find(summary) };
  };

  test('no tag moved: failed, and the earlier image, its tags and its layer are kept (not the layer the failed run pushed)', async () => {
    const first = await builtThenChanged('keep', { target: target('apps/keep'), tags: ['stable'] });
    // The objects changed, so the rebuild pushes a new layer; then its first tag is refused.
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/apps\/keep\/manifests\/v1$/ });
    const { status, line } = await rebuildOf('keep/artificer.json');
    assert.equal(status, 204);
    assert.equal(line?.outcome, 'failed', JSON.stringify(line));
    assert.equal(proxy.pendingFaults(), 0);
    const rec = await record('keep/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], first['artificer-digest']);
    assert.equal(rec['artificer-image'], first['artificer-image']);
    assert.equal(rec['artificer-tags'], first['artificer-tags']);
    assert.equal(rec['artificer-base'], first['artificer-base']);
    assert.equal(rec['artificer-generation'], first['artificer-generation']);
    for (const key of LAYER_KEYS) assert.equal(rec[key], first[key], key);
    assert.match(rec['artificer-error']!, new RegExp(`^tagging \\S+/apps/keep:v1: .*\\(no tag was moved by this build; the tags recorded beside ${first['artificer-digest']} at ${first['artificer-built-at']} still name it\\)$`));
    // What the record says is what the registry serves: both tags, the first build's image and layer.
    assert.equal(await registryDigest('apps/keep', 'v1'), first['artificer-digest']);
    assert.equal(await registryDigest('apps/keep', 'stable'), first['artificer-digest']);
    assert.equal((await lastLayer('apps/keep', 'v1')).digest, first['artificer-layer']);
  });

  test('some tags moved: the record names the new image with exactly those, and what the others still name', async () => {
    const first = await builtThenChanged('half', { target: target('apps/half'), tags: ['two'] });
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/apps\/half\/manifests\/two$/ });
    const { status } = await rebuildOf('half/artificer.json');
    assert.equal(status, 204);
    const rec = await record('half/artificer.json');
    const moved = await registryDigest('apps/half', 'v1');
    assert.notEqual(moved, first['artificer-digest'], 'v1 moved to the new image');
    assert.equal(await registryDigest('apps/half', 'two'), first['artificer-digest'], 'two was not moved');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.equal(rec['artificer-digest'], moved);
    assert.equal(rec['artificer-image'], `${proxy.host}/apps/half@${moved}`);
    assert.equal(rec['artificer-tags'], target('apps/half'));
    for (const key of LAYER_KEYS) assert.ok(!rec[key], key);
    assert.match(rec['artificer-error']!, /^only some tags were pushed/);
    assert.ok(
      rec['artificer-error']!.endsWith(`(the spec's other tags were not moved by this build; the other tags recorded beside ${first['artificer-digest']} at ${first['artificer-built-at']} still name it)`),
      rec['artificer-error'],
    );
  });

  test('retried, then given up on before any tag: the earlier image is still kept', async () => {
    const first = await builtThenChanged('giveup', { target: target('apps/giveup') });
    const blobs = /\/v2\/apps\/giveup\/blobs\//;
    // A young message: a 503 is worth a retry, so the run throws; it sent no tag and says so.
    proxy.failNext(1, { status: 503, method: 'HEAD', match: blobs });
    assert.equal((await rebuildOf('giveup/artificer.json')).status, 500);
    proxy.reset();
    const [meta] = await bucket.file('giveup/artificer.json').getMetadata();
    const custom = meta.metadata as Record<string, string>;
    assert.equal(custom['artificer-run-untagged'], custom['artificer-run'], 'the throwing run vouched it moved no tag');
    assert.equal((await record('giveup/artificer.json'))['artificer-status'], 'succeeded', 'the record is untouched');
    // Redelivered just under ARTIFICER_MAX_EVENT_AGE (600 s), past it when the push fails: given up on.
    proxy.failNext(1, { status: 503, method: 'HEAD', match: blobs, delayMs: 4000 });
    const { status } = await rebuildOf('giveup/artificer.json', new Date(Date.now() - 598_000));
    proxy.reset();
    assert.equal(status, 204);
    const rec = await record('giveup/artificer.json');
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.match(rec['artificer-error']!, /^gave up after retrying/);
    assert.match(rec['artificer-error']!, /\(no tag was moved by this build; the tags recorded beside sha256:[0-9a-f]{64} at \S+ still name it\)$/);
    assert.equal(rec['artificer-digest'], first['artificer-digest']);
    assert.equal(rec['artificer-image'], first['artificer-image']);
    assert.equal(rec['artificer-layer'], first['artificer-layer']);
    const [done] = await bucket.file('giveup/artificer.json').getMetadata();
    assert.ok(!(done.metadata as Record<string, string>)['artificer-run-untagged'], 'a record ends what the mark vouched for');
    assert.equal(await registryDigest('apps/giveup', 'v1'), first['artificer-digest']);
  });

  test("the first build of a new upload that fails does not take over the older upload's record", async () => {
    const name = 'fresh/artificer.json';
    const first = await builtThenChanged('fresh', { target: target('apps/fresh') });
    // A copy or rewrite keeps the custom metadata: the new generation carries the old record.
    const [old] = await bucket.file(name).getMetadata();
    await bucket.file(name).save(JSON.stringify({ base, target: target('apps/fresh'), files: ['app.txt'], cmd: ['new'] }), { resumable: false, metadata: { metadata: old.metadata } });
    const [spec] = await bucket.file(name).getMetadata();
    assert.equal((spec.metadata as Record<string, string>)['artificer-digest'], first['artificer-digest'], 'the old record came along');
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/apps\/fresh\/manifests\/v1$/ });
    assert.equal((await deliverStorageEvent(fn.url, objectEventData(spec as Record<string, unknown>))).status, 204);
    const rec = await record(name);
    assert.equal(rec['artificer-status'], 'failed', JSON.stringify(rec));
    assert.equal(rec['artificer-generation'], String(spec.generation));
    for (const key of ['artificer-digest', 'artificer-image', 'artificer-tags', ...LAYER_KEYS]) assert.ok(!rec[key], key);
    assert.doesNotMatch(rec['artificer-error']!, /recorded beside|no tag was moved/);
  });
});

describe('runs of one spec generation overlapping', { concurrency: false }, () => {
  // An upload's build and a base-update rebuild of the same generation, on a base that moves in
  // between: the rebuild starts later, on the new base, and must own the tags and the record.
  let overlapBase: string;
  let rebuild: RunningFunction;
  before(async () => {
    overlapBase = (await pushBusyboxBase(baseRegistry.host, { repository: 'base/busybox', tag: 'overlap', format: 'docker' })).reference;
    rebuild = await startFunction({ target: 'rebuildOnMessage', env: functionEnv() });
  });
  after(async () => {
    await rebuild?.stop();
  });
  /** Moves the base tag to a new image (one more env var: a new config, so a new digest for what is built on it). */
  const moveBase = (version: string): Promise<unknown> => exec(tool('crane'), ['mutate', '--insecure', overlapBase, '--env', `BASE_VERSION=${version}`, '-t', overlapBase]);
  const until = async (what: string, cond: () => boolean): Promise<void> => {
    for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(cond(), `timed out waiting for ${what}`);
  };
  /** Runs the base-update rebuild of `object` on the rebuild instance to its end; its summary line. */
  const rebuildNow = async (object: string): Promise<Record<string, unknown>> => {
    const res = await deliverPubsubEvent(rebuild.url, 'projects/p/topics/artificer-rebuild', { bucket: BUCKET, object, base: overlapBase }, { id: `overlap-${Date.now()}` });
    assert.equal(res.status, 204, res.body);
    return rebuild.waitForLog((l) => l.spec === `gs://${BUCKET}/${object}` && typeof l.outcome === 'string');
  };

  test('an earlier run that reaches its tags last does not move them back to the previous base', async () => {
    await upload('overlap/app.txt', 'overlap');
    const name = 'overlap/artificer.json';
    const spec = await uploadSpec(name, { base: overlapBase, target: target('apps/overlap'), files: ['app.txt'] });
    // Hold the upload's build at its first blob upload (the base is resolved by then) until the
    // rebuild, started later on the moved base, has tagged and recorded.
    proxy.failNext(1, { delayMs: 6000, method: 'PATCH', match: /\/v2\/apps\/overlap\/blobs\/uploads\// });
    const uploadRun = deliverStorageEvent(fn.url, objectEventData(spec));
    await until('the held upload', () => proxy.requests.some((q) => q.fault === 'delay' && q.path.startsWith('/v2/apps/overlap/')));
    await moveBase('2');
    const later = await rebuildNow(name);
    assert.equal(later.outcome, 'succeeded', JSON.stringify(later));
    assert.equal(await registryDigest('apps/overlap', 'v1'), later.digest);

    assert.equal((await uploadRun).status, 204);
    assert.equal(await registryDigest('apps/overlap', 'v1'), later.digest, 'the tag still names the later run\'s image');
    const rec = await record(name);
    assert.equal(rec['artificer-generation'], spec.generation);
    assert.equal(rec['artificer-digest'], later.digest, 'and the record names what the tag points at');
    const earlier = await fn.waitForLog((l) => l.spec === `gs://${BUCKET}/${name}` && typeof l.outcome === 'string');
    assert.equal(earlier.outcome, 'superseded', JSON.stringify(earlier));
    assert.match(String(earlier.message), /a later run \(.+\) started during this build/);
    assert.equal(await claimOf(name), later.run);
  });

  test('an earlier run that tagged before a later one started does not record over it', async () => {
    await withGcsFaults(async (gcsProxy, uploads) => {
      await upload('overlap/rec/app.txt', 'overlap-rec');
      const name = 'overlap/rec/artificer.json';
      const spec = await uploadSpec(name, { base: overlapBase, target: target('apps/overlap-rec'), files: ['app.txt'] });
      // The upload run reads the spec object's metadata three times: at the start, before its one
      // tag, and before its record. Hold the third until the later run has tagged and recorded.
      const specMetadata = /\/o\/overlap%2Frec%2Fartificer\.json(\?(?!.*alt=media).*)?$/;
      gcsProxy.failNext(2, { pass: true, method: 'GET', match: specMetadata });
      gcsProxy.failNext(1, { delayMs: 6000, method: 'GET', match: specMetadata });
      const uploadRun = deliverStorageEvent(uploads.url, objectEventData(spec));
      await until('the upload run\'s record read', () => gcsProxy.requests.some((q) => q.fault === 'delay'));
      const tagged = await registryDigest('apps/overlap-rec', 'v1');
      assert.ok(tagged, 'the upload run tagged before its record was held');
      await moveBase('3');
      const later = await rebuildNow(name);
      assert.equal(later.outcome, 'succeeded', JSON.stringify(later));
      assert.notEqual(later.digest, tagged, 'the later run built on the moved base');

      assert.equal((await uploadRun).status, 204);
      assert.equal(await registryDigest('apps/overlap-rec', 'v1'), later.digest);
      const rec = await record(name);
      assert.equal(rec['artificer-status'], 'succeeded');
      assert.equal(rec['artificer-digest'], later.digest, 'the record names what the tag points at');
      const earlier = await uploads.waitForLog((l) => l.spec === `gs://${BUCKET}/${name}` && typeof l.outcome === 'string');
      assert.equal(earlier.outcome, 'superseded', JSON.stringify(earlier));
      assert.equal(earlier.digest, tagged);
      assert.equal(await claimOf(name), later.run);
    });
  });
});

describe('the Cloud Storage source', { concurrency: false }, () => {
  /** `count` objects under `folder/` (one of them bigger than the read-ahead takes), and the same files on disk. */
  async function folderOf(folder: string, count: number, dir: string): Promise<void> {
    for (let i = 0; i < count; i++) {
      const name = `f${String(i).padStart(3, '0')}.txt`;
      const body = i === 7 ? Buffer.alloc(READ_AHEAD_MAX_BYTES + 1000, 'b') : Buffer.from(`object ${i}\n`.repeat(i + 1));
      await bucket.file(`${folder}/${name}`).save(body, { resumable: false });
      await writeFile(path.join(dir, name), body, { mode: 0o644 });
    }
  }

  /** The bucket through the function's own client (createStorage), its traffic crossing a proxy. */
  const viaProxy = (proxyUrl: string): Bucket => createStorage({ STORAGE_EMULATOR_HOST: proxyUrl }).bucket(BUCKET);

  test('symlinks uploaded with gcloud storage cp --preserve-symlinks are added as symlinks', { skip: !hasTool('gcloud') && 'gcloud is not installed (SETUP_SKIP_EMULATORS=1)' }, async () => {
    await using dir = await tempDir('symlinks');
    const app = path.join(dir.path, 'app');
    await mkdir(path.join(app, 'lib'), { recursive: true });
    await writeFile(path.join(app, 'lib/libfoo.so.1'), 'ELF pretend\n', { mode: 0o644 });
    await symlink('libfoo.so.1', path.join(app, 'lib/libfoo.so'));
    await symlink('/etc/hosts', path.join(app, 'hosts'));
    // The real gcloud, so the test follows what it stores for a symlink, not our idea of it.
    const env = gcloudStorageEnv(gcs.url, path.join(dir.path, 'gcloud-config'));
    await exec(tool('gcloud'), ['storage', 'cp', '-r', '--preserve-symlinks', app, `gs://${BUCKET}/links/`], { env });
    const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [{ from: 'app/', to: '/opt/app/' }] })), 'mem');
    const { source } = await pinGcsSource({ bucket, specName: 'links/artificer.json', files: spec.files });
    const entries: Array<[string, string, string | undefined]> = [];
    for await (const e of source()) entries.push([e.path, e.type, e.linkname]);
    assert.deepEqual(entries, [
      ['opt/app/hosts', 'symlink', '/etc/hosts'],
      ['opt/app/lib', 'directory', undefined],
      ['opt/app/lib/libfoo.so', 'symlink', 'libfoo.so.1'],
      ['opt/app/lib/libfoo.so.1', 'file', undefined],
    ]);
    const fromBucket = await createLayer(source, { mtime: 0 }).measure();
    const fromDisk = await createLayer(localSource([{ from: app, to: '/opt/app/' }]), { mtime: 0 }).measure();
    assert.deepEqual(fromBucket, fromDisk, 'the same layer as from the directory gcloud uploaded');
  });

  test('a symlink placeholder that cannot be added is refused from its metadata, before any download', async () => {
    const link = { metadata: { 'goog-reserved-file-is-symlink': 'true' } };
    await bucket.file('badlinks/a/empty').save('', { resumable: false, metadata: link });
    await bucket.file('badlinks/b/long').save('x'.repeat(4097), { resumable: false, metadata: link });
    await bucket.file('badlinks/c/direct').save('target', { resumable: false, metadata: link });
    const cases: Array<[unknown, RegExp]> = [
      ['a/', /badlinks\/a\/empty: is a symlink uploaded with "gcloud storage cp --preserve-symlinks".*: it holds no target/],
      ['b/', /badlinks\/b\/long: .*its target is longer than 4096 bytes/],
      ['c/direct', /badlinks\/c\/direct: .*named as an item of its own: a symlink is not followed in the bucket/],
    ];
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      for (const [item, message] of cases) {
        const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [item] })), 'mem');
        await assert.rejects(pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'badlinks/artificer.json', files: spec.files }), message);
      }
      assert.deepEqual(gcsProxy.requests.filter((r) => /alt=media/.test(r.path)), [], 'nothing downloaded');
    } finally {
      await gcsProxy.stop();
    }
  });

  test('objects whose entry needs their content are read ahead like the others', async () => {
    await using dir = await tempDir('encoded-ahead');
    for (let i = 0; i < 24; i++) {
      const body = Buffer.from(`page ${i}\n`.repeat(50 + i));
      await bucket.file(`ahead-enc/www/p${String(i).padStart(2, '0')}.html`).save(gzipSync(body), { resumable: false, metadata: { contentEncoding: 'gzip' } });
      await writeFile(path.join(dir.path, `p${String(i).padStart(2, '0')}.html`), body, { mode: 0o644 });
    }
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      gcsProxy.failNext(1000, { delayMs: 40, method: 'GET', match: /alt=media/ });
      const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [{ from: 'www/', to: '/srv/' }] })), 'mem');
      const { source } = await pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'ahead-enc/artificer.json', files: spec.files });
      const fromBucket = await createLayer(source, { mtime: 0 }).measure();
      const fromDisk = await createLayer(localSource([{ from: dir.path, to: '/srv/' }]), { mtime: 0 }).measure();
      assert.deepEqual(fromBucket, fromDisk);
      const media = gcsProxy.requests.filter((r) => /alt=media/.test(r.path));
      assert.equal(media.length, 24, 'each object downloaded once');
      assert.ok(Math.max(...media.map((r) => r.inFlight)) > 4, `downloads overlapped (most in flight: ${Math.max(...media.map((r) => r.inFlight))})`);
    } finally {
      await gcsProxy.stop();
    }
  });

  test('pinning stops at the signal (ARTIFICER_BUILD_TIMEOUT): a spec of 20,000 items is not stat-ed to the end', async () => {
    // Each item is one metadata request; in a function (~20–50 ms each) 20,000 of them ran past
    // its 540 s timeout, which kills it without a record, while the build's deadline waited.
    await bucket.file('manyitems/a.txt').save('a', { resumable: false });
    const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: Array.from({ length: 20_000 }, () => 'a.txt') })), 'mem');
    const started = Date.now();
    await assert.rejects(pinGcsSource({ bucket, specName: 'manyitems/artificer.json', files: spec.files, signal: AbortSignal.timeout(500) }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ARTIFICER_ABORTED', String(err));
      return true;
    });
    assert.ok(Date.now() - started < 5000, `stopped after ${Date.now() - started} ms`);
  });

  test('the objects a spec pins are bounded over all its items (MAX_LAYER_PATHS; here 12), a folder counted as it is listed', async () => {
    for (let i = 0; i < 5; i++) await bucket.file(`manyobjects/d/${i}.txt`).save(`${i}`, { resumable: false });
    const pin = (files: unknown[]) =>
      pinGcsSource({ bucket, specName: 'manyobjects/artificer.json', files: parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files })), 'mem').files, maxObjects: 12 });
    // The same folder under two names is 10 objects; a third is 15.
    assert.equal((await pin([{ from: 'd/', to: '/a/' }, { from: 'd/', to: '/b/' }, 'd/0.txt', 'd/1.txt'])).objects, 12);
    const refused = (name: string) => (err: Error & { code?: string }) =>
      err.code === 'ARTIFICER_SOURCE' && err.message === `gs://${BUCKET}/manyobjects/${name}: the spec's items name more than 12 objects (an object named by several items counts for each); at most 12 go into a layer`;
    await assert.rejects(pin([{ from: 'd/', to: '/a/' }, { from: 'd/', to: '/b/' }, { from: 'd/', to: '/c/' }]), refused('d/2.txt'));
    await assert.rejects(pin([{ from: 'd/', to: '/a/' }, { from: 'd/', to: '/b/' }, 'd/0.txt', 'd/1.txt', 'd/2.txt']), refused('d/2.txt'));
  });

  test('an object stored gzip-encoded (gcloud storage cp -Z) is added as its uncompressed bytes', async () => {
    await using dir = await tempDir('gzip-encoded');
    const page = Buffer.from('<p>served compressed, stored compressed</p>\n'.repeat(500));
    await bucket.file('encoded/site/index.html').save(gzipSync(page), { resumable: false, metadata: { contentEncoding: 'gzip', contentType: 'text/html' } });
    await bucket.file('encoded/site/plain.txt').save('plain\n', { resumable: false });
    await mkdir(path.join(dir.path, 'site'));
    await writeFile(path.join(dir.path, 'site/index.html'), page, { mode: 0o644 });
    await writeFile(path.join(dir.path, 'site/plain.txt'), 'plain\n', { mode: 0o644 });
    const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [{ from: 'site/', to: '/srv/' }] })), 'mem');
    const { source } = await pinGcsSource({ bucket, specName: 'encoded/artificer.json', files: spec.files });
    const fromBucket = await createLayer(source, { mtime: 0 }).measure();
    const fromDisk = await createLayer(localSource([{ from: path.join(dir.path, 'site'), to: '/srv/' }]), { mtime: 0 }).measure();
    assert.deepEqual(fromBucket, fromDisk);

    // One that would hold more than MAX_DECODED_BYTES is refused by name (for good: a retry reads the same).
    await bucket.file('encoded/big/zeros.bin').save(gzipSync(Buffer.alloc(MAX_DECODED_BYTES + 1)), { resumable: false, metadata: { contentEncoding: 'gzip' } });
    const big = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: ['big/'] })), 'mem');
    const pinned = await pinGcsSource({ bucket, specName: 'encoded/artificer.json', files: big.files });
    await assert.rejects(createLayer(pinned.source, { mtime: 0 }).measure(), (err: Error & { temporary?: boolean }) => {
      assert.match(err.message, /encoded\/big\/zeros\.bin.*stored gzip-encoded.*more than 32 MiB uncompressed.*without -Z/);
      assert.equal(err.temporary, false);
      return true;
    });
  });

  test("a download whose bytes do not match the object's CRC32C fails the pass, as worth reading again", async () => {
    await bucket.file('crc/app.bin').save(randomBytes(300 * 1024), { resumable: false });
    const [md] = await bucket.file('crc/app.bin').getMetadata();
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: ['app.bin'] })), 'mem');
      const { source } = await pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'crc/artificer.json', files: spec.files });
      const good = await createLayer(source, { mtime: 0 }).measure();
      // The same bytes, announced with another CRC32C (what a corrupted transfer looks like).
      const wrong = md.crc32c === 'AAAAAA==' ? 'AAAAAQ==' : 'AAAAAA==';
      gcsProxy.failNext(1, { method: 'GET', match: /alt=media/, responseHeaders: { 'x-goog-hash': `crc32c=${wrong},md5=${md.md5Hash}` } });
      await assert.rejects(createLayer(source, { mtime: 0 }).measure(), (err: Error & { temporary?: boolean }) => {
        assert.match(err.message, /crc\/app.bin.*did not match the data from the server/);
        assert.equal(err.temporary, true);
        return true;
      });
      assert.equal(gcsProxy.pendingFaults(), 0);
      assert.deepEqual(await createLayer(source, { mtime: 0 }).measure(), good, 'read again, it passes');
    } finally {
      await gcsProxy.stop();
    }
  });

  // Each download waits a while before it is answered (a stand-in for Cloud Storage's latency),
  // so downloads that were started together are seen in flight together.
  test('small objects are downloaded several at a time, at most READ_AHEAD_OBJECTS, into the same layer', async () => {
    await using dir = await tempDir('readahead');
    await folderOf('ahead/www', 40, dir.path);
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      gcsProxy.failNext(1000, { delayMs: 40, method: 'GET', match: /alt=media/ });
      const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: [{ from: 'www/', to: '/srv/' }] })), 'mem');
      const { source } = await pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'ahead/artificer.json', files: spec.files });
      // A pass that stops at the first entry (the build's preflight) opens nothing, so downloads nothing.
      const it = source()[Symbol.asyncIterator]();
      await it.next();
      await it.return?.();
      assert.deepEqual(gcsProxy.requests.filter((r) => /alt=media/.test(r.path)), [], 'nothing read ahead for a pass that opened nothing');
      const fromBucket = await createLayer(source, { mtime: 0 }).measure();
      const fromDisk = await createLayer(localSource([{ from: dir.path, to: '/srv/' }]), { mtime: 0 }).measure();
      assert.equal(fromBucket.diffId, fromDisk.diffId, 'the same entries, bytes and order as the files on disk');
      const media = gcsProxy.requests.filter((r) => /alt=media/.test(r.path));
      assert.equal(media.length, 40, 'each object read once');
      const most = Math.max(...media.map((r) => r.inFlight));
      assert.ok(most > 1 && most <= READ_AHEAD_OBJECTS, `at most ${READ_AHEAD_OBJECTS} downloads at once, more than one: ${most}`);
    } finally {
      await gcsProxy.stop();
    }
  });

  test('an object that fails while read ahead fails the pass with its name; the downloads after it are dropped', async () => {
    await using dir = await tempDir('readahead');
    await folderOf('ahead2/www', 60, dir.path);
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      // f003 is gone when it is read: Cloud Storage answers 404 for its pinned generation.
      gcsProxy.failNext(1, { status: 404, method: 'GET', match: /f003\.txt\?.*alt=media/ });
      const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: ['www/'] })), 'mem');
      const { source } = await pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'ahead2/artificer.json', files: spec.files });
      await assert.rejects(createLayer(source, { mtime: 0 }).measure(), (err: Error) => {
        assert.match(err.message, /gs:\/\/artifacts-it\/ahead2\/www\/f003\.txt#\d+: reading: the object changed or was deleted during the build/);
        assert.equal((err as Error & { temporary?: boolean }).temporary, true, 'the retried event lists the objects again');
        return true;
      });
      const media = gcsProxy.requests.filter((r) => /alt=media/.test(r.path));
      assert.ok(media.length < 60, `the pass stopped reading: ${media.length} of 60 objects requested`);
    } finally {
      await gcsProxy.stop();
    }
  });
  // A pass abandoned half-way (an upload attempt failed; the retry re-opens the layer) must not
  // disturb the next: @google-cloud/storage answers a download destroyed mid-body by destroying
  // its shared keep-alive agent, which cuts every other download in the process, and those it
  // then retries were cut again when answered. The next pass then failed ("reading: aborted" on
  // an object that was fine) or took seconds instead of a fraction of one.
  test('a pass abandoned with downloads read ahead leaves the next pass alone', async () => {
    for (let i = 0; i < 40; i++) await bucket.file(`ahead3/www/f${String(i).padStart(3, '0')}.bin`).save(randomBytes(200 * 1024), { resumable: false });
    const gcsProxy = await startFaultProxy(gcs.url);
    try {
      gcsProxy.failNext(10_000, { delayMs: 30, method: 'GET', match: /alt=media/ });
      const spec = parseSpecText(Buffer.from(JSON.stringify({ base: 'scratch', target: target('apps/x'), files: ['www/'] })), 'mem');
      const { source } = await pinGcsSource({ bucket: viaProxy(gcsProxy.url), specName: 'ahead3/artificer.json', files: spec.files });
      const abandoned = createLayer(source, { mtime: 0 }).open();
      await new Promise((resolve) => abandoned.stream.once('data', resolve));
      abandoned.stream.destroy(new Error('the upload failed'));
      await assert.rejects(abandoned.done);
      const next = await createLayer(source, { mtime: 0 }).measure();
      assert.ok(next.size > 40 * 200 * 1024);
      const media = gcsProxy.requests.filter((r) => /alt=media/.test(r.path));
      const perObject = new Map<string, number>();
      for (const r of media) perObject.set(r.path.split('?')[0]!, (perObject.get(r.path.split('?')[0]!) ?? 0) + 1);
      assert.deepEqual(media.filter((r) => r.status === undefined).map((r) => r.path), [], 'no download cut off');
      assert.ok(Math.max(...perObject.values()) <= 2, `each object read at most once per pass: ${JSON.stringify(Object.fromEntries(perObject))}`);
    } finally {
      await gcsProxy.stop();
    }
  });
});
