// On-prem Harbor, or distribution with its S3 storage driver on MinIO, answers blob GETs with a
// redirect to a presigned URL on the MinIO address (http://10.1.2.3:9000/…), while users name the
// registry (harbor.corp.example). The real registry runs behind the fault proxy, which answers
// the blob GET with that redirect (distribution's filesystem driver never redirects); a small
// node:http server stands in for MinIO. The registry's name resolves, through the client's
// `lookup` and the dispatcher's, to loopback, a private network like a LAN's. The client's
// `lookup` is counted: the name is resolved only once a private address is named to us.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { Agent } from 'undici';
import { RegistryError } from '../../src/errors.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { REGISTRY_LOOKUP_TIMEOUT_MS } from '../../src/registry/auth.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { staticCredentials } from '../../src/registry/credentials.ts';
import { MediaTypes, type Digest } from '../../src/oci/types.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

const data = randomBytes(4000);
let digest: Digest;
let reg: RunningRegistry;
let proxy: FaultProxy;
let minio: http.Server;
let minioHits = 0;
let name = '';
const dispatcher = new Agent({
  connect: {
    lookup: (_host, opts, cb) =>
      (opts as { all?: boolean }).all ? (cb as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4),
  },
});

before(async () => {
  reg = await startRegistry();
  proxy = await startFaultProxy(reg.url);
  name = `harbor.corp.test:${proxy.host.split(':')[1]}`;
  ({ digest } = await new RegistryClient().uploadBlob({ registry: proxy.host, repository: 'corp/base' }, { bytes: data }));
  minio = http.createServer((_req, res) => {
    minioHits++;
    res.writeHead(200, { 'content-length': data.length }).end(data);
  });
  await new Promise<void>((resolve) => minio.listen(0, '127.0.0.1', resolve));
});
beforeEach(() => {
  proxy.reset();
  minioHits = 0;
});
after(async () => {
  minio?.closeAllConnections();
  minio?.close();
  await dispatcher.close();
  await proxy?.stop();
  await reg?.stop();
});

/**
 * A client for which the registry's name resolves to `address` (the dispatcher always connects to
 * loopback); null makes the client's lookup hang, as a resolver that does not answer.
 */
function client(address: string | null, lookups: string[] = [], privateRedirects = true): RegistryClient {
  return new RegistryClient({
    insecureRegistries: [name], dispatcher, retry: { attempts: 1 }, privateRedirects,
    lookup: (hostname) => (lookups.push(hostname), address === null ? new Promise(() => {}) : Promise.resolve([{ address }])),
  });
}

function redirectBlobGets(n: number, location: string): void {
  proxy.failNext(n, { status: 307, method: 'GET', match: /\/blobs\/sha256:/, headers: { location } });
}
const minioUrl = (): string => `http://127.0.0.1:${(minio.address() as AddressInfo).port}/registry/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data?X-Amz-Signature=0f1e`;
const refused = (err: unknown): boolean => err instanceof RegistryError && /refusing to follow registry harbor\.corp\.test/.test(err.message);

// The lookup runs on the threadpool the layer pass compresses on, and a resolver that fails or
// hangs must cost nothing when nothing is redirected: the name is resolved only for a private target.
test('a push that is never sent to a private address resolves nothing', async () => {
  const lookups: string[] = [];
  const c = client('127.0.0.1', lookups);
  const repo = { registry: name, repository: 'corp/app' };
  const config = Buffer.from('{}');
  await c.uploadBlob(repo, { bytes: config });
  await c.uploadBlob(repo, { bytes: data, digest });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MediaTypes.ociLayerGzip, digest, size: data.length }],
  }));
  await c.putManifest(repo, 'v1', manifest, MediaTypes.ociManifest);
  assert.equal((await c.getManifest(repo, 'v1')).digest, sha256(manifest));
  // A redirect to storage named publicly (the dispatcher connects every name to loopback) is judged as written.
  redirectBlobGets(1, minioUrl().replace('127.0.0.1', 'storage.example.com'));
  assert.deepEqual(await c.getBlobBytes(repo, digest), data);
  assert.equal(minioHits, 1);
  assert.deepEqual(lookups, []);
});

test('a registry whose name resolves to a private network may redirect blob GETs to storage on it; the name is resolved once, at the first such redirect', async () => {
  const lookups: string[] = [];
  const c = client('127.0.0.1', lookups);
  assert.deepEqual(await c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), data);
  assert.deepEqual(lookups, [], 'not redirected: nothing resolved');
  redirectBlobGets(2, minioUrl());
  const twice = Promise.all([0, 1].map(() => c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest)));
  assert.deepEqual(await twice, [data, data]);
  redirectBlobGets(1, minioUrl());
  assert.deepEqual(await c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), data);
  assert.equal(minioHits, 3);
  assert.equal(proxy.pendingFaults(), 0);
  assert.deepEqual(lookups, ['harbor.corp.test'], 'concurrent and later redirects share the one lookup');
});

test('a registry whose name resolves to a public address may not send us to a private one', async () => {
  const lookups: string[] = [];
  redirectBlobGets(1, minioUrl());
  await assert.rejects(client('203.0.113.7', lookups).getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.equal(minioHits, 0);
  assert.deepEqual(lookups, ['harbor.corp.test']);
});

test('a registry on a LAN may not send us to our own loopback', async () => {
  const lookups: string[] = [];
  redirectBlobGets(1, minioUrl());
  await assert.rejects(client('10.1.2.3', lookups).getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.equal(minioHits, 0);
  assert.deepEqual(lookups, ['harbor.corp.test']);
});

test('a private registry still may not send us to the metadata server or link-local addresses, refused before any lookup', async () => {
  const lookups: string[] = [];
  for (const location of ['http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token', 'http://metadata.google.internal/computeMetadata/v1/', 'http://[fe80::1]/']) {
    proxy.reset();
    redirectBlobGets(1, location);
    await assert.rejects(client('127.0.0.1', lookups).getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused, location);
  }
  assert.deepEqual(lookups, []);
});

test('a resolver that does not answer holds the redirect only so long, then the registry is judged public', { timeout: REGISTRY_LOOKUP_TIMEOUT_MS + 20_000 }, async () => {
  const lookups: string[] = [];
  const c = client(null, lookups);
  redirectBlobGets(2, minioUrl());
  const started = Date.now();
  await assert.rejects(c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  const waited = Date.now() - started;
  assert.ok(waited >= REGISTRY_LOOKUP_TIMEOUT_MS - 100 && waited < REGISTRY_LOOKUP_TIMEOUT_MS + 3000, `waited ${waited} ms`);
  // The verdict is kept: the next redirect does not wait again.
  const again = Date.now();
  await assert.rejects(c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.ok(Date.now() - again < 1000);
  assert.deepEqual(lookups, ['harbor.corp.test']);
  assert.equal(minioHits, 0);
});

test('without privateRedirects (the library default, and the Cloud Function) the name is not resolved and the redirect is refused', async () => {
  // A registry's DNS could answer our lookup with a private address and the connection's with a
  // public one (rebinding); only a caller whose user names the registries (the CLI) opts in.
  const lookups: string[] = [];
  const c = client('127.0.0.1', lookups, false);
  redirectBlobGets(1, minioUrl());
  await assert.rejects(c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.deepEqual(lookups, []);
});

// Harbor's token service is the same host as the registry, but an on-prem distribution may name a
// token server on the LAN by address: its realm is judged as redirects are, resolving the
// registry's name when the realm is private.
test("a token realm on the network the registry's name resolves to is used, and only there", async () => {
  const secured = await startRegistry({ auth: 'token' });
  try {
    const named = `harbor.corp.test:${secured.host.split(':')[1]}`;
    const lookups: string[] = [];
    const make = (address: string): RegistryClient =>
      new RegistryClient({
        insecureRegistries: [named], dispatcher, retry: { attempts: 1 }, privateRedirects: true,
        credentials: staticCredentials(named, { username: secured.username!, password: secured.password! }),
        lookup: async (hostname) => (lookups.push(hostname), [{ address }]),
      });
    const repo = { registry: named, repository: 'corp/app' };
    assert.equal((await make('127.0.0.1').uploadBlob(repo, { bytes: data })).digest, digest);
    assert.deepEqual(lookups, ['harbor.corp.test']);
    await assert.rejects(make('203.0.113.7').uploadBlob(repo, { bytes: data }), /refusing token realm http:\/\/127\.0\.0\.1:\d+\/token of registry harbor\.corp\.test/);
  } finally {
    await secured.stop();
  }
});
