// A registry that redirects manifest requests elsewhere, as registry.k8s.io sends every request
// to a regional Artifact Registry (kubernetes/registry.k8s.io, cmd/archeio/docs/request-handling.md);
// distribution-spec allows a redirect on any request. Two loopback node:http servers stand in:
// the "registry" (basic auth) answers 307, the "mirror" wants an anonymous Bearer token from its
// own token endpoint, as Artifact Registry does for public images.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { promisify } from 'node:util';
import { Agent } from 'undici';
import { DeniedError, RegistryError, UnauthorizedError } from '../../src/errors.ts';
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
/**
 * How the mirror answers a manifest GET: as Artifact Registry does (wanting an anonymous token),
 * to anyone, or refusing every reader with 401 (with or without a challenge) or 403.
 */
let mirrorMode: 'anonymous-token' | 'open' | 'refuse-token' | '401' | '403' = 'anonymous-token';

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
    if (mirrorMode === '401' || mirrorMode === '403') {
      res.writeHead(Number(mirrorMode), { 'content-type': 'application/json' }).end('{"errors":[{"code":"DENIED","message":"not for you"}]}');
      return;
    }
    if ((req.headers.authorization !== 'Bearer anon-token' && mirrorMode !== 'open') || mirrorMode === 'refuse-token') {
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
  mirrorMode = 'anonymous-token';
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

/** A client that would retry a temporary failure 5 times. */
const retrying = (): RegistryClient =>
  new RegistryClient({ credentials: staticCredentials(host(registry), { username: 'u', password: 'registry-secret' }), retry: { attempts: 5, baseDelayMs: 1, maxDelayMs: 1 } });
const manifestGets = (): number => seen.filter((s) => s.server === 'mirror' && s.url.includes('/manifests/')).length;

test('a redirect target refusing a manifest GET with 401 is an UnauthorizedError naming it, not blob storage, and not retried', async () => {
  for (const mode of ['401', 'refuse-token'] as const) {
    seen.length = 0;
    mirrorMode = mode;
    await assert.rejects(retrying().getManifest({ registry: host(registry), repository: 'pause' }, '3.10'), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, `${mode}: ${String(err)}`);
      assert.equal(err.registry, host(mirror));
      assert.equal(err.temporary, false);
      assert.match(err.message, new RegExp(`unauthorized to pull pause \\(${host(registry)} redirected the request there\\) on ${host(mirror)} \\(credentials tried: anonymous\\)`));
      assert.doesNotMatch(err.message, /blob storage|signed URL/);
      return true;
    });
    // One attempt: once without a token and, when challenged, once with the anonymous one.
    assert.equal(manifestGets(), mode === '401' ? 1 : 2, mode);
    assert.equal(seen.filter((s) => s.url.startsWith('/v2/token')).length, mode === '401' ? 0 : 1, mode);
  }
});

test('a redirect target answering a manifest GET with 403 is a DeniedError naming it, not retried', async () => {
  mirrorMode = '403';
  await assert.rejects(retrying().getManifest({ registry: host(registry), repository: 'pause' }, '3.10'), (err: unknown) => {
    assert.ok(err instanceof DeniedError, String(err));
    assert.equal(err.registry, host(mirror));
    assert.equal(err.temporary, false);
    assert.match(err.message, /not for you/);
    return true;
  });
  assert.equal(manifestGets(), 1);
});

test('an https registry may not redirect a manifest GET to plain http, unless the target is an insecure registry', async (t) => {
  // A TLS registry under a public-looking name; the Agent resolves every name to loopback and
  // trusts the test's self-signed certificate. The mirror answers over plain http.
  const dir = await mkdtemp(join(tmpdir(), 'artificer-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    '-days', '2', '-subj', '/CN=registry.example.test', '-addext', 'subjectAltName=DNS:registry.example.test',
  ]);
  const [key, cert] = await Promise.all([readFile(join(dir, 'key.pem')), readFile(join(dir, 'cert.pem'))]);
  const tls = https.createServer({ key, cert }, (req, res) => {
    seen.push({ server: 'tls-registry', method: req.method!, url: req.url! });
    if (req.url === '/v2/') return void res.writeHead(200).end();
    res.writeHead(307, { location: redirectTo }).end();
  });
  await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
  const dispatcher = new Agent({
    connect: {
      ca: cert,
      lookup: (_host, opts, cb) =>
        (opts as { all?: boolean }).all ? (cb as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4),
    },
  });
  t.after(async () => {
    tls.closeAllConnections();
    tls.close();
    await dispatcher.close();
  });
  const registryName = `registry.example.test:${(tls.address() as AddressInfo).port}`;
  const mirrorName = `mirror.example.test:${(mirror.address() as AddressInfo).port}`;
  redirectTo = `http://${mirrorName}/v2/k8s-artifacts-prod/images/pause/manifests/3.10`;
  mirrorMode = 'open'; // its token realm would be a loopback address, which a public registry may not name
  const repo = { registry: registryName, repository: 'pause' };

  await assert.rejects(
    new RegistryClient({ dispatcher, retry: { attempts: 1 } }).getManifest(repo, '3.10'),
    (err: unknown) => err instanceof RegistryError && new RegExp(`refusing to follow registry ${registryName} from https to plain http http://${mirrorName}/`).test(err.message),
  );
  assert.ok(seen.some((s) => s.server === 'tls-registry' && s.url.includes('/manifests/')), 'the registry was asked over TLS');
  assert.equal(manifestGets(), 0, 'nothing was read over plain http');

  const got = await new RegistryClient({ dispatcher, insecureRegistries: [mirrorName], retry: { attempts: 1 } }).getManifest(repo, '3.10');
  assert.equal(got.digest, sha256(manifest));
});
