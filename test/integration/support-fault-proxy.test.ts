// The fault proxy in front of the real registry: transparent when told nothing, and each
// injected fault (status, reset, broken upload, delay, slow body) happens exactly as often as asked.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { after, before, beforeEach, describe, test } from 'node:test';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { craneManifest, pushBusyboxBase } from '../support/images.ts';
import { freePort } from '../support/ports.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Monolithic blob upload (POST, then PUT ?digest=) through `base`; returns the PUT status. */
async function uploadBlob(base: string, repo: string, blob: Uint8Array): Promise<{ status: number; digest: string }> {
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get('location')!, base);
  const digest = sha256(blob);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, {
    method: 'PUT',
    body: blob,
    headers: { 'content-type': 'application/octet-stream' },
  });
  await put.arrayBuffer();
  return { status: put.status, digest };
}

describe('fault proxy', () => {
  let registry: RunningRegistry;
  let proxy: FaultProxy;
  before(async () => {
    registry = await startRegistry();
    proxy = await startFaultProxy(registry.url);
  });
  after(async () => {
    await proxy?.stop();
    await registry?.stop();
  });
  beforeEach(() => proxy.reset());

  test('is transparent: crane pushes and reads an image through it', async () => {
    const base = await pushBusyboxBase(proxy.host, { repository: 'via/proxy', format: 'oci' });
    const direct = await craneManifest(`${registry.host}/via/proxy@${base.digest}`);
    assert.equal(direct.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    const methods = new Set(proxy.requests.map((r) => `${r.method} ${r.status}`));
    assert.ok(methods.has('PUT 201'), [...methods].join(','));
    assert.ok(proxy.requests.every((r) => r.status !== undefined && r.status < 500 && r.fault === undefined));
  });

  test('streams a large upload and download unchanged', async () => {
    const blob = randomBytes(24 * 1024 * 1024);
    const { status, digest } = await uploadBlob(proxy.url, 'big/blob', blob);
    assert.equal(status, 201);
    const res = await fetch(`${proxy.url}/v2/big/blob/blobs/${digest}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('docker-content-digest'), digest);
    assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digest);
  });

  test('rewrites absolute Location headers that point at the target', async () => {
    // Send the target's Host header so the registry builds a Location for the target itself.
    const location = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${proxy.url}/v2/loc/test/blobs/uploads/`, { method: 'POST', headers: { host: registry.host } }, (res) => {
        res.resume();
        resolve(String(res.headers.location));
      });
      req.on('error', reject);
      req.end();
    });
    assert.match(location, new RegExp(`^${proxy.url}/v2/loc/test/blobs/uploads/[\\w-]+\\?_state=`));
    // Without the trick, Host is preserved and the registry already answers with the proxy.
    const res = await fetch(`${proxy.url}/v2/loc/test/blobs/uploads/`, { method: 'POST' });
    assert.ok(res.headers.get('location')!.startsWith(`${proxy.url}/`));
  });

  test('status faults answer with a registry JSON error, exactly n times, only where matched', async () => {
    proxy.failNext(2, { status: 503, match: /^\/v2\/$/ });
    proxy.failNext(1, { status: 429, method: 'HEAD', headers: { 'retry-after': '0' } });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${proxy.url}/v2/`);
      statuses.push(res.status);
      if (res.status === 503) {
        assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
        const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
        assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
      } else {
        await res.arrayBuffer();
      }
    }
    assert.deepEqual(statuses, [503, 503, 200]);
    assert.equal(proxy.pendingFaults(), 1);
    const get = await fetch(`${proxy.url}/v2/none/manifests/x`);
    await get.arrayBuffer();
    assert.equal(get.status, 404); // GET untouched by the HEAD-only rule
    const head = await fetch(`${proxy.url}/v2/none/manifests/x`, { method: 'HEAD' });
    assert.equal(head.status, 429);
    assert.equal(head.headers.get('retry-after'), '0');
    assert.equal(proxy.pendingFaults(), 0);
    assert.deepEqual(
      proxy.requests.map((r) => [r.method, r.status, r.fault]),
      [['GET', 503, 'status'], ['GET', 503, 'status'], ['GET', 200, undefined], ['GET', 404, undefined], ['HEAD', 429, 'status']],
    );
  });

  test('an injected 500 on a blob upload leaves the upload to the client to retry', async () => {
    proxy.failNext(1, { status: 500, method: 'PUT', match: /\/blobs\/uploads\// });
    const blob = randomBytes(3 * 1024 * 1024);
    assert.equal((await uploadBlob(proxy.url, 'retry/blob', blob)).status, 500);
    assert.equal((await uploadBlob(proxy.url, 'retry/blob', blob)).status, 201);
  });

  test('reset breaks the connection, also in the middle of an upload', async () => {
    proxy.failNext(1, { reset: true, match: /^\/v2\/$/ });
    await assert.rejects(fetch(`${proxy.url}/v2/`), TypeError);
    assert.equal((await fetch(`${proxy.url}/v2/`)).status, 200);

    proxy.failNext(1, { reset: true, afterBytes: 1024 * 1024, method: 'PUT' });
    await assert.rejects(uploadBlob(proxy.url, 'reset/blob', randomBytes(8 * 1024 * 1024)), TypeError);
    assert.equal(proxy.requests.find((r) => r.fault === 'reset' && r.method === 'PUT')?.status, undefined);
    assert.equal((await uploadBlob(proxy.url, 'reset/blob', randomBytes(1024))).status, 201);
  });

  test('delayMs holds the request, bodyDelayMs stalls the body after the headers', async () => {
    proxy.failNext(1, { delayMs: 300 });
    let t = performance.now();
    assert.equal((await fetch(`${proxy.url}/v2/`)).status, 200);
    assert.ok(performance.now() - t >= 290);

    const { digest } = await uploadBlob(proxy.url, 'slow/blob', randomBytes(1024));
    proxy.failNext(1, { bodyDelayMs: 400, match: /\/blobs\/sha256:/ });
    t = performance.now();
    const res = await fetch(`${proxy.url}/v2/slow/blob/blobs/${digest}`);
    const headersAfter = performance.now() - t;
    assert.equal(res.status, 200);
    assert.ok(headersAfter < 350, `headers took ${headersAfter}ms`);
    assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digest);
    assert.ok(performance.now() - t >= 390);
  });

  test('a pass rule forwards its requests unchanged, so the rule after it takes the next one', async () => {
    proxy.failNext(2, { pass: true, method: 'GET', match: /^\/v2\/$/ });
    proxy.failNext(1, { status: 503, method: 'GET', match: /^\/v2\/$/ });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await fetch(`${proxy.url}/v2/`)).status);
    assert.deepEqual(statuses, [200, 200, 503, 200]);
    assert.deepEqual(proxy.requests.map((r) => r.fault), [undefined, undefined, 'status', undefined]);
    assert.equal(proxy.pendingFaults(), 0);
  });

  test('answers 502 when the target is down, and rejects meaningless faults', async () => {
    const dead = await startFaultProxy(`http://127.0.0.1:${await freePort()}`);
    try {
      const res = await fetch(`${dead.url}/v2/`);
      assert.equal(res.status, 502);
      assert.match(((await res.json()) as { errors: Array<{ message: string }> }).errors[0]!.message, /ECONNREFUSED/);
      assert.throws(() => dead.failNext(1, { match: /x/ }), /say what to do/);
      assert.throws(() => dead.failNext(0, { status: 503 }), /positive integer/);
    } finally {
      await dead.stop();
    }
  });
});
