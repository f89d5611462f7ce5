// A registry that redirects manifest requests elsewhere, as registry.k8s.io sends every request
// to a regional Artifact Registry (kubernetes/registry.k8s.io, cmd/archeio/docs/request-handling.md);
// distribution-spec allows a redirect on any request. Two loopback node:http servers stand in:
// the "registry" (basic auth) answers 307, the "mirror" wants an anonymous Bearer token from its
// own token endpoint, as Artifact Registry does for public images.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { staticCredentials } from '../../src/registry/credentials.ts';

const manifest = Buffer.from(JSON.stringify({
  schemaVersion: 2, mediaType: MediaTypes.ociManifest,
  config: { mediaType: MediaTypes.ociConfig, digest: sha256('{}'), size: 2 }, layers: [],
}));
const BASIC = `Basic ${Buffer.from('u:registry-secret').toString('base64')}`;
const seen: Array<{ server: string; method: string; url: string; authorization?: string }> = [];
/** Where the registry sends manifest requests. */
let redirectTo = '';

function listen(name: string, handler: http.RequestListener): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    seen.push({ server: name, method: req.method!, url: req.url!, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    handler(req, res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
const host = (s: http.Server): string => `127.0.0.1:${(s.address() as AddressInfo).port}`;

let registry: http.Server;
let mirror: http.Server;
before(async () => {
  registry = await listen('registry', (req, res) => {
    if (req.headers.authorization !== BASIC) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="registry"' }).end();
    if (req.url === '/v2/') return void res.writeHead(200).end();
    res.writeHead(307, { location: redirectTo }).end();
  });
  mirror = await listen('mirror', (req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === '/v2/token') {
      // Anonymous only: this token server has never heard of the registry's user.
      if (req.headers.authorization) return void res.writeHead(401).end();
      assert.deepEqual(url.searchParams.getAll('scope'), ['repository:k8s-artifacts-prod/images/pause:pull']);
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'anon-token', expires_in: 300 }));
    }
    if (req.headers.authorization !== 'Bearer anon-token') {
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://${host(mirror)}/v2/token",service="mirror",scope="repository:k8s-artifacts-prod/images/pause:pull"`,
        'content-type': 'application/json',
      }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    res.writeHead(200, { 'content-type': MediaTypes.ociManifest, 'docker-content-digest': sha256(manifest) }).end(manifest);
  });
});
after(() => {
  for (const s of [registry, mirror]) {
    s.closeAllConnections();
    s.close();
  }
});
beforeEach(() => {
  seen.length = 0;
  redirectTo = `http://${host(mirror)}/v2/k8s-artifacts-prod/images/pause/manifests/3.10`;
});

const client = (): RegistryClient =>
  new RegistryClient({ credentials: staticCredentials(host(registry), { username: 'u', password: 'registry-secret' }), retry: { attempts: 1 } });

test('a manifest GET follows the redirect; the target gets an anonymous token of its own, never the registry credentials', async () => {
  const got = await client().getManifest({ registry: host(registry), repository: 'pause' }, '3.10');
  assert.equal(got.digest, sha256(manifest));
  assert.deepEqual(got.bytes, manifest);
  const there = seen.filter((s) => s.server === 'mirror');
  assert.deepEqual(there.map((s) => `${s.method} ${s.url.split('?')[0]} ${s.authorization ?? '-'}`), [
    'GET /v2/k8s-artifacts-prod/images/pause/manifests/3.10 -',
    'GET /v2/token -',
    'GET /v2/k8s-artifacts-prod/images/pause/manifests/3.10 Bearer anon-token',
  ]);
  assert.ok(seen.some((s) => s.server === 'registry' && s.authorization === BASIC), 'the registry itself got its credentials');
});

test('a manifest redirect to the metadata server is refused before any request there', async () => {
  redirectTo = 'http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token';
  await assert.rejects(
    client().getManifest({ registry: host(registry), repository: 'pause' }, '3.10'),
    (err: unknown) => err instanceof RegistryError && /refusing to follow registry .* to http:\/\/169\.254\.169\.254/.test(err.message),
  );
  assert.ok(seen.every((s) => s.server === 'registry'));
});
