import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, DeniedError, RegistryError, UnauthorizedError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes, type Digest } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { staticCredentials } from '../../src/registry/credentials.ts';
import type { Repository } from '../../src/registry/types.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

const noRetry = { attempts: 1, baseDelayMs: 1 };

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const rec = (m: string, f?: Record<string, unknown>): void => void lines.push(`${m} ${JSON.stringify(f ?? {})}`);
  return { lines, debug: rec, info: rec, warn: rec };
}

/** One image push as the build does it: HEAD, upload config and layer, PUT manifest. */
async function pushImage(client: RegistryClient, repo: Repository, tag: string): Promise<string> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, tag }));
  const layer = randomBytes(1000);
  for (const b of [config, layer]) {
    if (!(await client.hasBlob(repo, sha256(b)))) await client.uploadBlob(repo, { bytes: b });
  }
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: sha256(layer), size: layer.length }],
  }));
  return client.putManifest(repo, tag, manifest, MediaTypes.ociManifest);
}

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; host: string; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    server,
    host,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('basic auth', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'basic' });
  });
  after(async () => {
    await reg?.stop();
  });

  test('the right password pushes and pulls; the password never reaches the log', async () => {
    const logger = recordingLogger();
    const client = new RegistryClient({ retry: noRetry, logger, credentials: staticCredentials(reg.host, { username: reg.username!, password: reg.password! }, 'test creds') });
    const repo = { registry: reg.host, repository: 'basic/app' };
    const digest = await pushImage(client, repo, 'v1');
    assert.equal((await client.getManifest(repo, 'v1')).digest, digest);
    assert.ok(logger.lines.length > 0);
    const b64 = Buffer.from(`${reg.username}:${reg.password}`).toString('base64');
    for (const line of logger.lines) {
      assert.ok(!line.includes(reg.password!) && !line.includes(b64), line);
      assert.doesNotMatch(line, /authorization/i);
    }
  });

  test('a wrong password is UnauthorizedError naming the registry and the source, not the password', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: 'wrong-secret-123' }, 'docker config /tmp/x/config.json') });
    await assert.rejects(client.getManifest({ registry: reg.host, repository: 'basic/app' }, 'v1'), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.code, 'ARTIFICER_UNAUTHORIZED');
      assert.equal(err.registry, reg.host);
      assert.equal(err.credentialSource, 'docker config /tmp/x/config.json');
      assert.equal(err.status, 401);
      assert.match(err.message, new RegExp(`unauthorized to pull basic/app on ${reg.host.replace(/\./g, '\\.')} \\(credentials tried: docker config /tmp/x/config.json\\)`));
      assert.ok(!err.message.includes('wrong-secret-123'));
      assert.ok(!JSON.stringify(err).includes('wrong-secret-123'));
      return true;
    });
  });

  test('credentials are sent to a registry written with capitals or a default port', async () => {
    // The Authorization header goes only where the URL's origin equals the endpoint's; that
    // comparison once failed for "LocalHost:PORT", so every request went out anonymous.
    const port = reg.host.split(':')[1]!;
    const registry = `LocalHost:${port}`;
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(registry, { username: reg.username!, password: reg.password! }) });
    const repo = { registry, repository: 'basic/mixed-case' };
    const digest = await pushImage(client, repo, 'v1');
    assert.equal((await client.getManifest(repo, 'v1')).digest, digest);
  });

  test('no credentials is UnauthorizedError naming "anonymous"', async () => {
    const client = new RegistryClient({ retry: noRetry });
    await assert.rejects(client.hasBlob({ registry: reg.host, repository: 'basic/app' }, sha256('x')), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.credentialSource, 'anonymous');
      return true;
    });
  });
});

describe('token auth', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'token', refreshTokens: { 'refresh-abc': 'robot' } });
  });
  after(async () => {
    await reg?.stop();
  });

  test('tokens are scoped per repository and action and cached: a second push fetches none', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: reg.password! }) });
    const repo = { registry: reg.host, repository: 'tok/app' };
    const before1 = reg.tokenServer!.requests.length;
    await pushImage(client, repo, 'one');
    const first = reg.tokenServer!.requests.slice(before1);
    assert.ok(first.length >= 1 && first.length <= 2, JSON.stringify(first));
    assert.ok(first.every((r) => r.username === reg.username));
    assert.deepEqual(first.at(-1)!.scopes, ['repository:tok/app:pull,push']);
    const issued = reg.tokenServer!.tokensIssued();
    await pushImage(client, repo, 'two');
    await client.getManifest(repo, 'two'); // pull is covered by the pull,push token
    assert.equal(reg.tokenServer!.tokensIssued(), issued, 'no new token for the second push');
    assert.equal(client.tokenRequests, first.length);
  });

  test('a cross-repository mount asks for pull on the source too, and mounts', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: reg.password! }) });
    const src = { registry: reg.host, repository: 'tok/base' };
    const dst = { registry: reg.host, repository: 'tok/derived' };
    const { digest } = await client.uploadBlob(src, { bytes: randomBytes(500) });
    const n = reg.tokenServer!.requests.length;
    assert.deepEqual(await client.mountBlob(dst, digest, src), { mounted: true });
    const asked = reg.tokenServer!.requests.slice(n).map((r) => r.scopes);
    assert.deepEqual(asked, [['repository:tok/base:pull', 'repository:tok/derived:pull,push']]);
    assert.equal(await client.hasBlob(dst, digest), true);
  });

  test('a mount without pull rights on the source falls back (false)', async () => {
    const limited = await startRegistry({
      auth: 'token',
      users: { u: 'p' },
      authorize: (r) => (r.username === 'u' && r.password === 'p' ? r.scopes.filter((s) => !s.startsWith('repository:secret/')) : false),
    });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(limited.host, { username: 'u', password: 'p' }) });
      const src = { registry: limited.host, repository: 'open/src' };
      const { digest } = await client.uploadBlob(src, { bytes: randomBytes(64) });
      const dst = { registry: limited.host, repository: 'open/dst' };
      assert.equal((await client.mountBlob(dst, digest, { registry: limited.host, repository: 'secret/src' })).mounted, false);
      assert.equal(await client.hasBlob(dst, digest), false);
      // The fallback the build does next still works with the same client.
      await client.uploadBlob(dst, { bytes: await client.getBlobBytes(src, digest) });
      assert.equal(await client.hasBlob(dst, digest), true);
    } finally {
      await limited.stop();
    }
  });

  test('a token server refusing the mount\'s scopes outright falls back to an upload (false), not a failed push', async () => {
    // Some token servers answer 401/403 to the whole request rather than grant fewer scopes
    // when one of them (pull on the mount source) is not allowed; ggcr treats a failed mount
    // authorization like a refused mount and uploads (go-containerregistry PRs #1406, #1681).
    const refusing = await startRegistry({
      auth: 'token',
      users: { u: 'p' },
      authorize: (r) => (r.username !== 'u' || r.password !== 'p' || r.scopes.some((s) => s.startsWith('repository:secret/')) ? false : r.scopes),
    });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(refusing.host, { username: 'u', password: 'p' }) });
      const src = { registry: refusing.host, repository: 'open/src' };
      const bytes = randomBytes(64);
      const { digest } = await client.uploadBlob(src, { bytes });
      const dst = { registry: refusing.host, repository: 'open/dst' };
      const n = refusing.tokenServer!.requests.length;
      assert.deepEqual(await client.mountBlob(dst, digest, { registry: refusing.host, repository: 'secret/src' }), { mounted: false });
      assert.ok(
        refusing.tokenServer!.requests.slice(n).some((r) => r.granted === undefined && r.scopes.includes('repository:secret/src:pull')),
        'the token server was asked for the mount and refused',
      );
      await client.uploadBlob(dst, { bytes, digest });
      assert.equal(await client.hasBlob(dst, digest), true);
    } finally {
      await refusing.stop();
    }
  });

  test('a refused mount token is remembered per (target, source): later blobs from that source ask neither token server nor helper', async () => {
    // Each refusal drops the credential and resolves it again (a credential helper run), in case
    // it rotated; for a refusal of the source's scope that only repeats itself for every blob.
    const refusing = await startRegistry({
      auth: 'token',
      users: { u: 'p' },
      authorize: (r) => (r.username !== 'u' || r.password !== 'p' || r.scopes.some((s) => s.startsWith('repository:secret/')) ? false : r.scopes),
    });
    try {
      let resolves = 0;
      const helper = staticCredentials(refusing.host, { username: 'u', password: 'p' }, 'credential helper docker-credential-test');
      const client = new RegistryClient({ retry: noRetry, credentials: { resolve: (registry, signal) => (resolves++, helper.resolve(registry, signal)) } });
      const src = { registry: refusing.host, repository: 'open/src' };
      const digests: Digest[] = [];
      for (let i = 0; i < 3; i++) digests.push((await client.uploadBlob(src, { bytes: randomBytes(64) })).digest);
      const dst = { registry: refusing.host, repository: 'open/dst' };
      const secret = { registry: refusing.host, repository: 'secret/src' };
      const asked = (): number => refusing.tokenServer!.requests.filter((r) => r.scopes.some((sc) => sc.startsWith('repository:secret/'))).length;

      assert.deepEqual(await client.mountBlob(dst, digests[0]!, secret), { mounted: false });
      const [tokensAfterFirst, resolvesAfterFirst] = [asked(), resolves];
      assert.equal(tokensAfterFirst, 1, 'the first mount asked the token server once');
      for (const d of digests.slice(1)) assert.deepEqual(await client.mountBlob(dst, d, secret), { mounted: false });
      assert.deepEqual([asked(), resolves], [tokensAfterFirst, resolvesAfterFirst], 'token requests naming secret/src, credential resolutions');

      // Another source, or another target, is asked again.
      await client.mountBlob(dst, digests[1]!, { registry: refusing.host, repository: 'secret/other' });
      await client.mountBlob({ registry: refusing.host, repository: 'open/dst2' }, digests[1]!, secret);
      assert.equal(asked(), tokensAfterFirst + 2);
      // The uploads that follow a refused mount still work.
      await client.uploadBlob(dst, { bytes: await client.getBlobBytes(src, digests[2]!) });
      assert.equal(await client.hasBlob(dst, digests[2]!), true);
    } finally {
      await refusing.stop();
    }
  });

  test('a wrong password is refused by the token server: UnauthorizedError with the source', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: 'nope-secret' }, 'credential helper docker-credential-test') });
    await assert.rejects(client.getManifest({ registry: reg.host, repository: 'tok/app' }, 'one'), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.credentialSource, 'credential helper docker-credential-test');
      assert.equal(err.registry, reg.host);
      assert.ok(!err.message.includes('nope-secret'));
      return true;
    });
  });

  test('anonymous gets a token without access: UnauthorizedError naming "anonymous"', async () => {
    const client = new RegistryClient({ retry: noRetry });
    await assert.rejects(client.getManifest({ registry: reg.host, repository: 'tok/app' }, 'one'), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.credentialSource, 'anonymous');
      return true;
    });
  });

  test('an identity token is exchanged with the refresh_token grant (POST)', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { identityToken: 'refresh-abc' }) });
    const n = reg.tokenServer!.requests.length;
    await pushImage(client, { registry: reg.host, repository: 'tok/robot' }, 'r1');
    const reqs = reg.tokenServer!.requests.slice(n);
    assert.ok(reqs.length > 0);
    assert.ok(reqs.every((r) => r.method === 'POST' && r.grantType === 'refresh_token'), JSON.stringify(reqs));
  });

  test('a token server answering the OAuth2 POST with 404 gets the GET flow, the identity token as the password', async () => {
    // The distribution OAuth doc says to fall back to the GET token flow when the POST is not
    // supported (404); ggcr and containerd do, sending the identity token as the Basic password
    // (containerd's authorizer.go: "As of September 2017, GCR is known to return 404").
    const noOAuth = await startRegistry({
      auth: 'token',
      tokenOAuthPost: false,
      authorize: (r) => (r.username === 'robot' && r.password === 'refresh-xyz' ? r.scopes : false),
    });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(noOAuth.host, { username: 'robot', identityToken: 'refresh-xyz' }) });
      await pushImage(client, { registry: noOAuth.host, repository: 'tok/robot' }, 'r1');
      const reqs = noOAuth.tokenServer!.requests;
      assert.deepEqual(reqs.slice(0, 2).map((r) => `${r.method} ${r.username ?? '-'} ${r.granted ? 'granted' : 'refused'}`), ['POST - refused', 'GET robot granted']);
    } finally {
      await noOAuth.stop();
    }
  });

  test('an expired token is replaced after the registry rejects it', async () => {
    const short = await startRegistry({ auth: 'token', tokenExpiresIn: 1 });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(short.host, { username: short.username!, password: short.password! }) });
      const repo = { registry: short.host, repository: 'exp/app' };
      await client.uploadBlob(repo, { bytes: Buffer.from('a') });
      const issued = short.tokenServer!.tokensIssued();
      await new Promise((r) => setTimeout(r, 2100));
      await client.uploadBlob(repo, { bytes: Buffer.from('b') });
      assert.ok(short.tokenServer!.tokensIssued() > issued);
    } finally {
      await short.stop();
    }
  });
});

describe('credential rotation (CredentialProvider.resolve is called again)', () => {
  /** A provider of short-lived passwords, as the Google one is: `rotate()` hands out a new one. */
  function rotatingProvider(): { resolve(): Promise<{ credential: { username: string; password: string }; source: string }>; current: string; resolves: number; rotate(): void } {
    const p = {
      current: 'access-token-1',
      resolves: 0,
      async resolve() {
        p.resolves++;
        return { credential: { username: 'oauth2accesstoken', password: p.current }, source: 'rotating provider' };
      },
      rotate() {
        p.current = `access-token-${Number(p.current.split('-').at(-1)) + 1}`;
      },
    };
    return p;
  }

  test('a token server refusing a rotated-out credential makes the client resolve again and retry once', async () => {
    const provider = rotatingProvider();
    const reg = await startRegistry({ auth: 'token', authorize: (r) => (r.password === provider.current ? r.scopes : false) });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: provider });
      assert.equal(await client.hasBlob({ registry: reg.host, repository: 'rot/a' }, sha256('x')), false);
      provider.rotate();
      // Another repository needs a new token; the cached credential is refused.
      assert.equal(await client.hasBlob({ registry: reg.host, repository: 'rot/b' }, sha256('x')), false);
      assert.equal(provider.resolves, 2);
      assert.deepEqual(reg.tokenServer!.requests.map((r) => Boolean(r.granted)), [true, false, true]);
    } finally {
      await reg.stop();
    }
  });

  test('a credential that does not change is not retried: one refusal, UnauthorizedError', async () => {
    const reg = await startRegistry({ auth: 'token' });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: 'u', password: 'wrong' }, 'static test') });
      await assert.rejects(client.hasBlob({ registry: reg.host, repository: 'rot/a' }, sha256('x')), UnauthorizedError);
      assert.equal(reg.tokenServer!.requests.length, 1);
    } finally {
      await reg.stop();
    }
  });

  test('a credential is resolved again when the token made from it has expired', async () => {
    const provider = rotatingProvider();
    const passwordsSeen: string[] = [];
    // Both passwords stay valid, so only expiry (not a refusal) can make the client ask again.
    const reg = await startRegistry({ auth: 'token', tokenExpiresIn: 2, authorize: (r) => (passwordsSeen.push(r.password ?? ''), r.scopes) });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: provider });
      const repo = { registry: reg.host, repository: 'rot/exp' };
      assert.equal(await client.hasBlob(repo, sha256('x')), false);
      assert.equal(await client.hasBlob(repo, sha256('y')), false, 'the cached token serves');
      assert.equal(provider.resolves, 1);
      provider.rotate();
      await new Promise((r) => setTimeout(r, 1100)); // the client drops a 2 s token after 1 s
      assert.equal(await client.hasBlob(repo, sha256('x')), false);
      assert.equal(provider.resolves, 2);
      assert.deepEqual(passwordsSeen, ['access-token-1', 'access-token-2']);
    } finally {
      await reg.stop();
    }
  });
});

describe('auth edge cases against small servers', () => {
  test('a token realm on a link-local / metadata address, or carrying userinfo, is refused', async () => {
    // A realm the registry chose may not carry credentials of its own either (on loopback, which
    // this loopback registry may otherwise send us to).
    for (const realm of ['http://169.254.169.254/computeMetadata/v1/token', 'http://metadata.google.internal/token', 'http://[fe80::1]/t', 'http://x:y@127.0.0.1:1/token']) {
      const srv = await listen((_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="x"` }).end());
      try {
        const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(srv.host, { username: 'u', password: 'p' }) });
        await assert.rejects(client.getManifest({ registry: srv.host, repository: 'a' }, 'b'), (err: unknown) => {
          assert.ok(err instanceof RegistryError, String(err));
          assert.match(err.message, /refusing token realm/);
          return true;
        });
      } finally {
        await srv.close();
      }
    }
  });

  test('credentials are not sent to a plain-http token realm on a non-loopback host', async () => {
    const srv = await listen((_req, res) => void res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://auth.example.invalid/token",service="x"' }).end());
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(srv.host, { username: 'u', password: 'p' }) });
      await assert.rejects(client.hasBlob({ registry: srv.host, repository: 'a' }, sha256('x')), /refusing to send credentials for 127\.0\.0\.1:\d+ over plain http to auth\.example\.invalid/);
    } finally {
      await srv.close();
    }
  });

  test('a token server answering 403 is UnauthorizedError naming the credential source, not a bare registry error', async () => {
    const tokens = await listen((_req, res) => void res.writeHead(403).end());
    const srv = await listen((_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="x"` }).end());
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(srv.host, { username: 'u', password: 'p' }, 'test source') });
      await assert.rejects(client.hasBlob({ registry: srv.host, repository: 'a' }, sha256('x')), (err: unknown) => {
        assert.ok(err instanceof UnauthorizedError, String(err));
        assert.equal(err.credentialSource, 'test source');
        assert.equal(err.status, 403);
        return true;
      });
    } finally {
      await srv.close();
      await tokens.close();
    }
  });

  test('a token without expires_in is kept for the default 60 s less the 10 s margin, then fetched anew', async (t) => {
    let issued = 0;
    const tokens = await listen((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `t${++issued}` })));
    const srv = await listen((req, res) => {
      if (!req.headers.authorization?.startsWith('Bearer t')) return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="x"` }).end();
      res.writeHead(404).end();
    });
    // Only Date is mocked: the client judges a token's age by Date.now(); sockets keep real time.
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      const client = new RegistryClient({ retry: noRetry });
      const repo = { registry: srv.host, repository: 'a' };
      assert.equal(await client.hasBlob(repo, sha256('x')), false);
      t.mock.timers.tick(45_000);
      assert.equal(await client.hasBlob(repo, sha256('x')), false);
      assert.equal(issued, 1, 'the token serves for 45 s');
      t.mock.timers.tick(10_000);
      assert.equal(await client.hasBlob(repo, sha256('x')), false);
      assert.equal(issued, 2, 'after 55 s the client asks for a new one before the registry refuses the old');
    } finally {
      t.mock.timers.reset();
      await srv.close();
      await tokens.close();
    }
  });

  test('a blob redirect to storage is followed without the Authorization header', async () => {
    const blob = randomBytes(300);
    const digest = sha256(blob);
    const seen: IncomingHttpHeaders[] = [];
    const storage = await listen((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
    });
    const registry = await listen((req, res) => {
      if (!req.headers.authorization) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
      res.writeHead(307, { location: `http://${storage.host}/bucket/${digest}?X-Goog-Signature=abc` }).end();
    });
    try {
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(registry.host, { username: 'u', password: 'p' }) });
      const repo = { registry: registry.host, repository: 'a' };
      assert.deepEqual(await client.getBlobBytes(repo, digest), blob);
      const { stream } = await client.getBlob(repo, digest);
      for await (const _ of stream) void _;
      assert.equal(seen.length, 2);
      for (const h of seen) assert.equal(h.authorization, undefined);
    } finally {
      await registry.close();
      await storage.close();
    }
  });

  test('403 is DeniedError', async () => {
    const srv = await listen((_req, res) => {
      res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] }));
    });
    try {
      const client = new RegistryClient({ retry: noRetry });
      await assert.rejects(client.putManifest({ registry: srv.host, repository: 'a' }, 't', Buffer.from('{}'), MediaTypes.ociManifest), (err: unknown) => {
        assert.ok(err instanceof DeniedError, String(err));
        assert.equal(err.status, 403);
        assert.equal(err.errors[0]?.code, 'DENIED');
        assert.match(err.message, /^pushing manifest 127\.0\.0\.1:\d+\/a:t: denied: not allowed to push a/);
        assert.match(err.message, /\(credentials used: anonymous\); the registry says: DENIED: requested access to the resource is denied$/);
        return true;
      });
    } finally {
      await srv.close();
    }
  });
});

describe('token auth under concurrency and cancellation', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'token' });
  });
  after(async () => {
    await reg?.stop();
  });

  test('concurrent uploads to one repository share one token request', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: reg.password! }) });
    const repo = { registry: reg.host, repository: 'conc/app' };
    const n = reg.tokenServer!.tokensIssued();
    await Promise.all(Array.from({ length: 6 }, () => client.uploadBlob(repo, { bytes: randomBytes(1000) })));
    assert.equal(reg.tokenServer!.tokensIssued() - n, 1);
  });

  test('concurrent requests refused by one shared token request each say only what they were doing', async () => {
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(reg.host, { username: reg.username!, password: 'wrong' }) });
    const repo = { registry: reg.host, repository: 'conc/app' };
    const digests = ['a', 'b', 'c'].map((x) => sha256(x));
    const results = await Promise.allSettled(digests.map((d) => client.hasBlob(repo, d)));
    for (const [i, r] of results.entries()) {
      assert.equal(r.status, 'rejected');
      const err = (r as PromiseRejectedResult).reason as Error;
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.equal(err.message.match(/checking blob/g)?.length, 1, err.message);
      assert.match(err.message, new RegExp(`^checking blob ${digests[i]} in `));
    }
  });

  test('an aborted upload rejects with AbortedError', async () => {
    const { AbortedError } = await import('../../src/errors.ts');
    const { Readable } = await import('node:stream');
    const client = new RegistryClient({ credentials: staticCredentials(reg.host, { username: reg.username!, password: reg.password! }) });
    const ac = new AbortController();
    let sent = 0;
    const slow = new Readable({
      read() {
        sent++;
        if (sent === 3) ac.abort();
        setTimeout(() => this.push(randomBytes(16_384)), 5);
      },
    });
    await assert.rejects(client.uploadBlob({ registry: reg.host, repository: 'conc/app' }, { open: () => slow, replayable: true }, ac.signal), (err: unknown) => {
      assert.ok(err instanceof AbortedError, String(err));
      assert.equal(err.code, 'ARTIFICER_ABORTED');
      return true;
    });
    assert.ok(slow.destroyed, 'the source stream is torn down');
  });
});

describe('auth work shared by callers with their own AbortSignals', () => {
  // Two builds may share one RegistryClient. The ping, the credential and the token each
  // requests needs are fetched once and awaited by every caller: one caller's abort must end
  // that caller's wait only, not the work the others are waiting for.
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  before(async () => {
    reg = await startRegistry({ auth: 'token' });
    proxy = await startFaultProxy(reg.url);
  });
  beforeEach(() => proxy.reset());
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  async function until(cond: () => boolean): Promise<void> {
    for (let i = 0; !cond(); i++) {
      if (i > 500) throw new Error('timed out waiting');
      await sleep(5);
    }
  }

  /** A starts a request, B joins the work A started, then A aborts: B still gets its answer. */
  async function abortFirstOfTwo(client: RegistryClient, started: () => boolean): Promise<void> {
    const repo = { registry: proxy.host, repository: 'shared/app' };
    const ac = new AbortController();
    const a = client.hasBlob(repo, sha256('a'), ac.signal);
    await until(started);
    const b = client.hasBlob(repo, sha256('b'), new AbortController().signal);
    await sleep(30); // B is now waiting for the work A started
    ac.abort();
    await assert.rejects(a, AbortedError);
    assert.equal(await b.catch((err: unknown) => `B failed: ${String(err)}`), false);
  }

  test('one caller aborting during the shared /v2/ ping does not fail the other', async () => {
    proxy.failNext(1, { match: /^\/v2\/$/, delayMs: 400 });
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(proxy.host, { username: reg.username!, password: reg.password! }) });
    await abortFirstOfTwo(client, () => proxy.requests.length === 1);
  });

  test('one caller aborting during the shared credential resolution does not fail the other', async () => {
    let resolving = 0;
    const provider = {
      async resolve(_registry: string, signal?: AbortSignal) {
        resolving++;
        await sleep(400, undefined, signal ? { signal } : {});
        return { credential: { username: reg.username!, password: reg.password! }, source: 'slow provider' };
      },
    };
    const client = new RegistryClient({ retry: noRetry, credentials: provider });
    await abortFirstOfTwo(client, () => resolving === 1);
    assert.equal(resolving, 1, 'B waited for the same resolution');
  });

  test('once every caller has aborted, the shared work is stopped and the next caller starts it again', async () => {
    const repo = { registry: proxy.host, repository: 'shared/app' };
    // The ping: the caller that aborts is the only one; the next, right after, pings afresh.
    proxy.failNext(1, { match: /^\/v2\/$/, delayMs: 200 });
    const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(proxy.host, { username: reg.username!, password: reg.password! }) });
    const ac = new AbortController();
    const a = client.hasBlob(repo, sha256('a'), ac.signal);
    await until(() => proxy.requests.length === 1);
    ac.abort();
    const c = client.hasBlob(repo, sha256('c'));
    await assert.rejects(a, AbortedError);
    assert.equal(await c.catch((err: unknown) => `C failed: ${String(err)}`), false);
    assert.equal(proxy.requests.filter((r) => r.path === '/v2/').length, 2);

    // The credential: its resolution is told to stop, and a caller arriving while it winds
    // down does not wait for it.
    const signals: AbortSignal[] = [];
    const provider = {
      async resolve(_registry: string, signal?: AbortSignal) {
        signals.push(signal!);
        if (signals.length === 1) {
          await sleep(300); // a credential helper slow to notice
          signal!.throwIfAborted();
        }
        return { credential: { username: reg.username!, password: reg.password! }, source: 'slow provider' };
      },
    };
    const client2 = new RegistryClient({ retry: noRetry, credentials: provider });
    const ac2 = new AbortController();
    const a2 = client2.hasBlob(repo, sha256('a'), ac2.signal);
    await until(() => signals.length === 1);
    ac2.abort();
    const c2 = client2.hasBlob(repo, sha256('c'));
    await assert.rejects(a2, AbortedError);
    assert.equal(signals[0]!.aborted, true, 'the provider was told to stop');
    assert.equal(await c2.catch((err: unknown) => `C failed: ${String(err)}`), false);
    assert.equal(signals.length, 2);
  });

  test('one caller aborting during the shared token request does not fail the other', async () => {
    const tokenProxy = await startFaultProxy(new URL(reg.tokenServer!.realm).origin);
    try {
      // The registry's challenge, pointed at a proxy in front of the token server that holds the answer.
      proxy.failNext(1, { match: /^\/v2\/$/, responseHeaders: { 'www-authenticate': `Bearer realm="${tokenProxy.url}/token",service="${reg.tokenServer!.service}"` } });
      tokenProxy.failNext(1, { delayMs: 400 });
      const client = new RegistryClient({ retry: noRetry, credentials: staticCredentials(proxy.host, { username: reg.username!, password: reg.password! }) });
      await abortFirstOfTwo(client, () => tokenProxy.requests.length === 1);
      assert.equal(tokenProxy.requests.length, 1, 'B waited for the same token request');
      // The only caller aborts; one that comes right after asks for a token of its own.
      tokenProxy.failNext(1, { delayMs: 400 });
      const other = { registry: proxy.host, repository: 'shared/other' };
      const ac = new AbortController();
      const a = client.hasBlob(other, sha256('a'), ac.signal);
      await until(() => tokenProxy.requests.length === 2);
      ac.abort();
      const c = client.hasBlob(other, sha256('c'));
      await assert.rejects(a, AbortedError);
      assert.equal(await c.catch((err: unknown) => `C failed: ${String(err)}`), false);
      assert.equal(tokenProxy.requests.length, 3);
    } finally {
      await tokenProxy.stop();
    }
  });
});

describe('a token the registry rejects, under concurrency', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  before(async () => {
    reg = await startRegistry({ auth: 'token' });
    proxy = await startFaultProxy(reg.url);
  });
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  test('requests refused with the same token at once share one new token and one credential resolution', async () => {
    let resolves = 0;
    const provider = {
      async resolve() {
        resolves++;
        return { credential: { username: reg.username!, password: reg.password! }, source: 'counting provider' };
      },
    };
    const client = new RegistryClient({ retry: noRetry, credentials: provider });
    const repo = { registry: proxy.host, repository: 'herd/app' };
    assert.equal(await client.hasBlob(repo, sha256('warm')), false);
    assert.deepEqual([reg.tokenServer!.requests.length, resolves], [1, 1]);
    // The registry stops accepting the cached token (revoked, or expired by its clock) while
    // four requests are using it, as concurrent uploads do.
    const challenge = `Bearer realm="${reg.tokenServer!.realm}",service="${reg.tokenServer!.service}",scope="repository:herd/app:pull",error="invalid_token"`;
    proxy.reset();
    proxy.failNext(4, { status: 401, method: 'HEAD', headers: { 'www-authenticate': challenge } });
    const found = await Promise.all(['a', 'b', 'c', 'd'].map((x) => client.hasBlob(repo, sha256(x))));
    assert.deepEqual(found, [false, false, false, false]);
    // Each request was refused once and sent once more, with the new token.
    assert.deepEqual(proxy.requests.map((r) => r.status), [401, 401, 401, 401, 404, 404, 404, 404]);
    assert.deepEqual([reg.tokenServer!.requests.length - 1, resolves - 1], [1, 1], 'new token requests, credential resolutions');
  });
});

describe('a token server granting fewer actions than asked', () => {
  // Docker Hub and distribution's token servers answer a request for pull,push with a token for
  // pull alone when that is all the account may do, and say so nowhere but in the JWT (which
  // clients should not parse). The registry then answers 401 with error="insufficient_scope".
  const password = randomBytes(12).toString('base64url');
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  before(async () => {
    reg = await startRegistry({
      auth: 'token',
      users: { reader: password },
      authorize: (r) => {
        if (r.username !== undefined && (r.username !== 'reader' || r.password !== password)) return false;
        // Anyone may pull readonly/*; nobody may push there.
        return r.scopes.filter((s) => s.startsWith('repository:readonly/')).map((s) => s.replace(/:[^:]*$/, ':pull'));
      },
    });
    proxy = await startFaultProxy(reg.url);
  });
  beforeEach(() => proxy.reset());
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  test('a push is DeniedError naming the registry and the credential source, after one new token; pulls still work', async () => {
    const client = new RegistryClient({ retry: { attempts: 3, baseDelayMs: 1 }, credentials: staticCredentials(proxy.host, { username: 'reader', password }, 'docker config /home/ci/.docker/config.json') });
    const repo = { registry: proxy.host, repository: 'readonly/app' };
    assert.equal(await client.hasBlob(repo, sha256('x')), false);
    for (const attempt of [1, 2]) {
      const tokens = reg.tokenServer!.requests.length;
      proxy.reset();
      await assert.rejects(client.uploadBlob(repo, { bytes: Buffer.from(`layer ${attempt}`) }), (err: unknown) => {
        assert.ok(err instanceof DeniedError, String(err));
        assert.equal(err.code, 'ARTIFICER_DENIED');
        assert.equal(err.registry, proxy.host);
        assert.equal(err.credentialSource, 'docker config /home/ci/.docker/config.json');
        assert.match(err.message, /^pushing blob to 127\.0\.0\.1:\d+\/readonly\/app: denied: not allowed to push readonly\/app on 127\.0\.0\.1:\d+ \(credentials used: docker config \/home\/ci\/\.docker\/config\.json\)/);
        assert.ok(!JSON.stringify({ ...err, message: err.message }).includes(password));
        return true;
      });
      // One new token for the retry after the first refusal, and nothing more: no retry loop.
      const asked = reg.tokenServer!.requests.slice(tokens);
      assert.deepEqual(asked.map((r) => r.scopes), attempt === 1 ? [['repository:readonly/app:pull,push'], ['repository:readonly/app:pull,push']] : [['repository:readonly/app:pull,push']]);
      assert.deepEqual(proxy.requests.map((r) => `${r.method} ${r.status}`), ['POST 401', 'POST 401']);
    }
    const tokens = reg.tokenServer!.requests.length;
    assert.equal(await client.hasBlob(repo, sha256('x')), false, 'pull still works');
    assert.equal(reg.tokenServer!.requests.length, tokens, 'with the token already held');
  });

  test('anonymous, the same refusal is UnauthorizedError: logging in may help', async () => {
    const client = new RegistryClient({ retry: noRetry });
    const repo = { registry: proxy.host, repository: 'readonly/app' };
    assert.equal(await client.hasBlob(repo, sha256('x')), false);
    await assert.rejects(client.uploadBlob(repo, { bytes: Buffer.from('layer') }), (err: unknown) => {
      assert.ok(err instanceof UnauthorizedError, String(err));
      assert.match(err.message, /unauthorized to push readonly\/app on 127\.0\.0\.1:\d+ \(credentials tried: anonymous\)/);
      return true;
    });
  });
});
