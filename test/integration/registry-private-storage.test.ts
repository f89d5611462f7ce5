// On-prem Harbor, or distribution with its S3 storage driver on MinIO, answers blob GETs with a
// redirect to a presigned URL on the MinIO address (http://10.1.2.3:9000/…), while users name the
// registry (harbor.corp.example). The real registry runs behind the fault proxy, which answers
// the blob GET with that redirect (distribution's filesystem driver never redirects); a small
// node:http server stands in for MinIO. The registry's name resolves, through the client's
// `lookup` and the dispatcher's, to loopback, a private network like a LAN's.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { Agent } from 'undici';
import { RegistryError } from '../../src/errors.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { Digest } from '../../src/oci/types.ts';
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

/** A client for which the registry's name resolves to `address` (the dispatcher always connects to loopback). */
function client(address: string, lookups: string[] = [], privateRedirects = true): RegistryClient {
  return new RegistryClient({
    insecureRegistries: [name], dispatcher, retry: { attempts: 1 }, privateRedirects,
    lookup: async (hostname) => (lookups.push(hostname), [{ address }]),
  });
}

function redirectBlobGets(n: number, location: string): void {
  proxy.failNext(n, { status: 307, method: 'GET', match: /\/blobs\/sha256:/, headers: { location } });
}
const minioUrl = (): string => `http://127.0.0.1:${(minio.address() as AddressInfo).port}/registry/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data?X-Amz-Signature=0f1e`;
const refused = (err: unknown): boolean => err instanceof RegistryError && /refusing to follow registry harbor\.corp\.test/.test(err.message);

test('a registry whose name resolves to a private network may redirect blob GETs to storage on it; the name is resolved once', async () => {
  const lookups: string[] = [];
  const c = client('127.0.0.1', lookups);
  redirectBlobGets(2, minioUrl());
  for (let i = 0; i < 2; i++) assert.deepEqual(await c.getBlobBytes({ registry: name, repository: 'corp/base' }, digest), data);
  assert.equal(minioHits, 2);
  assert.equal(proxy.pendingFaults(), 0);
  assert.deepEqual(lookups, ['harbor.corp.test']);
});

test('a registry whose name resolves to a public address may not send us to a private one', async () => {
  redirectBlobGets(1, minioUrl());
  await assert.rejects(client('203.0.113.7').getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.equal(minioHits, 0);
});

test('a registry on a LAN may not send us to our own loopback', async () => {
  redirectBlobGets(1, minioUrl());
  await assert.rejects(client('10.1.2.3').getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused);
  assert.equal(minioHits, 0);
});

test('a private registry still may not send us to the metadata server or link-local addresses', async () => {
  for (const location of ['http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token', 'http://metadata.google.internal/computeMetadata/v1/', 'http://[fe80::1]/']) {
    proxy.reset();
    redirectBlobGets(1, location);
    await assert.rejects(client('127.0.0.1').getBlobBytes({ registry: name, repository: 'corp/base' }, digest), refused, location);
  }
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
