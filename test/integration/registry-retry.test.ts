import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { NetworkError, RegistryError } from '../../src/errors.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { staticCredentials } from '../../src/registry/credentials.ts';
import type { Repository } from '../../src/registry/types.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

const fast = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

describe('retries through a fault-injecting proxy', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  let repo: Repository;
  before(async () => {
    reg = await startRegistry({ auth: 'token' });
    proxy = await startFaultProxy(reg.url);
    // The token realm is the token server's own address, so only registry traffic crosses the proxy.
    client = new RegistryClient({ retry: fast, credentials: staticCredentials(proxy.host, { username: reg.username!, password: reg.password! }) });
    repo = { registry: proxy.host, repository: 'retry/app' };
  });
  beforeEach(() => proxy.reset());
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  test('503 on a manifest GET is retried', async () => {
    const config = Buffer.from('{}');
    await client.uploadBlob(repo, { bytes: config });
    const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: 2 }, layers: [] }));
    await client.putManifest(repo, 't', m, MediaTypes.ociManifest);
    proxy.reset();
    proxy.failNext(2, { status: 503, method: 'GET', match: /\/manifests\/t$/ });
    const got = await client.getManifest(repo, 't');
    assert.equal(got.digest, sha256(m));
    assert.equal(proxy.pendingFaults(), 0);
    assert.equal(proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/manifests/t')).length, 3);
  });

  test('a connection reset in the middle of an upload body restarts the whole upload (bytes are replayable)', async () => {
    const data = randomBytes(200_000);
    proxy.failNext(1, { reset: true, afterBytes: 50_000, method: 'PUT', match: /\/blobs\/uploads\// });
    const up = await client.uploadBlob(repo, { bytes: data });
    assert.equal(up.digest, sha256(data));
    assert.equal(proxy.pendingFaults(), 0);
    assert.equal(proxy.requests.filter((r) => r.method === 'POST').length, 2, 'a fresh upload session');
    assert.deepEqual(await client.getBlobBytes(repo, up.digest), data);
  });

  // An upload session reserved before its bytes exist (a config): the bytes then go in one PUT.
  // A PUT into it that fails (a session the registry expired answers 404 BLOB_UPLOAD_UNKNOWN) is
  // not the end: the bytes go as an ordinary upload. A session a PUT failed in is cancelled, as
  // a declined mount's is (the rule lives in one place); a reservation never used is cancelled.
  // distribution asks for the `delete` action to cancel an upload: the 401 before a DELETE (and
  // the token it brings) is left out of the sequences.
  test('a reserved upload session takes the bytes in one PUT; a failed one is cancelled and replaced by a fresh upload', async () => {
    const uploads = (): string[] =>
      proxy.requests.filter((r) => /\/blobs\/uploads\//.test(r.path) && r.status !== 401).map((r) => `${r.method} ${r.status}`);
    const first = randomBytes(1000);
    const reserved = client.reserveUpload(repo);
    // The POST goes out now, not when the bytes come.
    for (let i = 0; i < 500 && !uploads().includes('POST 202'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(uploads(), ['POST 202']);
    assert.deepEqual(await reserved.upload(first), { digest: sha256(first), size: first.length });
    assert.deepEqual(uploads(), ['POST 202', 'PUT 201']);
    await reserved.release(); // used: nothing to cancel
    assert.deepEqual(uploads(), ['POST 202', 'PUT 201']);
    assert.deepEqual(await client.getBlobBytes(repo, sha256(first)), first);

    proxy.reset();
    const second = randomBytes(1000);
    const expired = client.reserveUpload(repo);
    proxy.failNext(1, { status: 404, method: 'PUT', match: /\/blobs\/uploads\// });
    assert.deepEqual(await expired.upload(second), { digest: sha256(second), size: second.length });
    // The proxy's 404 leaves the session open on the registry, so its DELETE finds it (a really
    // expired one would answer 404 to the DELETE too, which is ignored).
    assert.deepEqual(uploads(), ['POST 202', 'PUT 404', 'DELETE 204', 'POST 202', 'PUT 201']);
    assert.deepEqual(await client.getBlobBytes(repo, sha256(second)), second);

    proxy.reset();
    const refused = client.reserveUpload(repo);
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/blobs\/uploads\// });
    await assert.rejects(refused.upload(randomBytes(10)), (err: Error) => err instanceof RegistryError && /returned 400/.test(err.message));
    assert.deepEqual(uploads(), ['POST 202', 'PUT 400', 'DELETE 204'], 'a refusal is the answer, not a reason to upload again');
    await refused.release(); // cancelled already
    assert.deepEqual(uploads(), ['POST 202', 'PUT 400', 'DELETE 204']);

    proxy.reset();
    const unused = client.reserveUpload(repo);
    await unused.release();
    assert.deepEqual(uploads(), ['POST 202', 'DELETE 204']);
  });

  // release() runs after a build has failed or been aborted; a registry that no longer answers
  // must not hold it (undici's own limit is 300 s). It gives up after a few seconds, quietly.
  test('releasing a reservation does not wait on a registry that stops answering', { timeout: 30_000 }, async () => {
    const unused = client.reserveUpload(repo);
    for (let i = 0; i < 500 && !proxy.requests.some((r) => r.method === 'POST' && r.status === 202); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    proxy.failNext(Number.MAX_SAFE_INTEGER, { delayMs: 60_000, method: 'DELETE' });
    await unused.release();
    assert.ok(proxy.requests.some((r) => r.method === 'DELETE'), 'the DELETE was sent');
    proxy.reset();
  });

  test('a replayable stream is re-opened for the retry', async () => {
    const data = randomBytes(100_000);
    let opened = 0;
    proxy.failNext(1, { status: 500, method: 'PUT', match: /\/blobs\/uploads\// });
    const up = await client.uploadBlob(repo, { open: () => (opened++, Readable.from([data])), replayable: true });
    assert.equal(up.digest, sha256(data));
    assert.equal(opened, 2);
  });

  test('a single-pass stream is not retried: NetworkError, temporary, one attempt', async () => {
    const data = randomBytes(100_000);
    let opened = 0;
    proxy.failNext(1, { reset: true, afterBytes: 10_000, method: 'PATCH' });
    await assert.rejects(client.uploadBlob(repo, { open: () => (opened++, Readable.from([data])), replayable: false }), (err: unknown) => {
      assert.ok(err instanceof NetworkError, String(err));
      assert.equal(err.temporary, true);
      assert.match(err.message, /^pushing blob to 127\.0\.0\.1:\d+\/retry\/app: PATCH http:\/\/127\.0\.0\.1:\d+\/v2\/retry\/app\/blobs\/uploads\//);
      return true;
    });
    assert.equal(opened, 1);
  });

  test('a single-pass stream: a failed POST is retried before the stream is opened', async () => {
    const data = randomBytes(50_000);
    let opened = 0;
    proxy.failNext(2, { status: 503, method: 'POST', match: /\/blobs\/uploads\/$/ });
    const up = await client.uploadBlob(repo, { open: () => (opened++, Readable.from([data])), replayable: false });
    assert.equal(up.digest, sha256(data));
    assert.equal(opened, 1);
    assert.deepEqual(proxy.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD').map((r) => `${r.method} ${r.status}`), ['POST 503', 'POST 503', 'POST 202', 'PATCH 202', 'PUT 201']);
  });

  test('a single-pass stream: a failed commit (PUT, no body) is retried without re-sending', async () => {
    const data = randomBytes(50_000);
    let opened = 0;
    proxy.failNext(1, { status: 500, method: 'PUT', match: /\/blobs\/uploads\// });
    const up = await client.uploadBlob(repo, { open: () => (opened++, Readable.from([data])), replayable: false });
    assert.equal(up.digest, sha256(data));
    assert.equal(opened, 1);
    assert.equal(proxy.requests.filter((r) => r.method === 'PATCH').length, 1);
    assert.deepEqual(await client.getBlobBytes(repo, up.digest), data);
  });

  test('a commit the registry applied but whose answer was lost: the retry finds the blob there', async () => {
    const data = randomBytes(50_000);
    proxy.failNext(1, { loseAnswer: true, method: 'PUT', match: /\/blobs\/uploads\// });
    const up = await client.uploadBlob(repo, { open: () => Readable.from([data]), replayable: false });
    assert.equal(up.digest, sha256(data));
    const puts = proxy.requests.filter((r) => r.method === 'PUT').map((r) => `${r.fault ?? ''}${r.status}`);
    assert.deepEqual(puts, ['lost-answer201', '404'], 'the first PUT went through; the retried one found no session');
    assert.deepEqual(await client.getBlobBytes(repo, up.digest), data);
  });

  test('429 with Retry-After is honoured', async () => {
    proxy.failNext(1, { status: 429, headers: { 'retry-after': '1' }, method: 'HEAD' });
    const started = Date.now();
    assert.equal(await client.hasBlob(repo, sha256('absent')), false);
    assert.ok(Date.now() - started >= 900, `waited ${Date.now() - started}ms`);
  });

  test('a persistent 503 gives up after the configured attempts with a temporary RegistryError', async () => {
    proxy.failNext(10, { status: 503, method: 'HEAD' });
    await assert.rejects(client.hasBlob(repo, sha256('x')), (err: unknown) => {
      assert.ok(err instanceof RegistryError, String(err));
      assert.equal(err.status, 503);
      assert.equal(err.temporary, true);
      assert.match(err.message, /^checking blob sha256:[a-f0-9]{64} in 127\.0\.0\.1:\d+\/retry\/app: HEAD .* returned 503/);
      return true;
    });
    assert.equal(proxy.requests.filter((r) => r.method === 'HEAD').length, fast.attempts);
  });

  test('400 is not retried', async () => {
    proxy.failNext(3, { status: 400, method: 'GET', match: /manifests/ });
    await assert.rejects(client.getManifest(repo, 'whatever'), (err: unknown) => err instanceof RegistryError && err.status === 400 && !err.temporary);
    assert.equal(proxy.requests.filter((r) => r.method === 'GET' && /manifests/.test(r.path)).length, 1);
  });

  test('a refused connection is a temporary NetworkError after retries', async () => {
    const { freePort } = await import('../support/ports.ts');
    const port = await freePort();
    const c = new RegistryClient({ retry: { attempts: 2, baseDelayMs: 1 } });
    await assert.rejects(c.hasBlob({ registry: `127.0.0.1:${port}`, repository: 'x' }, sha256('x')), (err: unknown) => {
      assert.ok(err instanceof NetworkError, String(err));
      assert.equal(err.temporary, true);
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });
  });
});
