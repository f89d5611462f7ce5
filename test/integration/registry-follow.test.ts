// A hostile registry (a small node:http server speaking just enough of the API) hands out upload
// Locations on other hosts: the client must not send its credentials there, and must refuse
// metadata and link-local addresses outright.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Agent } from 'undici';
import { RegistryError } from '../../src/errors.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { staticCredentials } from '../../src/registry/credentials.ts';

let location = '';
const seen: Array<{ server: string; method: string; url: string; authorization?: string }> = [];

function listen(name: string, handler: http.RequestListener): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    seen.push({ server: name, method: req.method!, url: req.url!, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    handler(req, res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

let registry: http.Server;
let elsewhere: http.Server;
const host = (s: http.Server) => `127.0.0.1:${(s.address() as AddressInfo).port}`;

before(async () => {
  registry = await listen('registry', (req, res) => {
    if (!req.headers.authorization) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="hostile"' }).end();
      return;
    }
    req.resume();
    if (req.method === 'POST') res.writeHead(202, { location }).end();
    else res.writeHead(404).end();
  });
  elsewhere = await listen('elsewhere', (req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN"}]}'));
  });
});

after(() => {
  registry.close();
  elsewhere.close();
});

const client = () =>
  new RegistryClient({ credentials: staticCredentials(host(registry), { username: 'u', password: 'secret-pw' }), retry: { attempts: 1 } });

test('an upload Location on another origin gets no credentials', async () => {
  seen.length = 0;
  location = `http://${host(elsewhere)}/upload/1`;
  await assert.rejects(client().uploadBlob({ registry: host(registry), repository: 'x/y' }, { bytes: Buffer.from('hello') }));
  const there = seen.filter((s) => s.server === 'elsewhere');
  assert.ok(there.length >= 1, 'the upload went to the Location');
  assert.ok(there.every((s) => s.authorization === undefined), `no Authorization sent elsewhere: ${JSON.stringify(there)}`);
  assert.ok(seen.some((s) => s.server === 'registry' && s.authorization?.startsWith('Basic ')), 'the registry itself got them');
});

test('an upload Location at the metadata server is refused before any request', async () => {
  seen.length = 0;
  location = 'http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token';
  await assert.rejects(
    client().uploadBlob({ registry: host(registry), repository: 'x/y' }, { bytes: Buffer.from('hello') }),
    (err: unknown) => err instanceof RegistryError && /refusing to follow registry .* to http:\/\/169\.254\.169\.254/.test(err.message),
  );
  assert.ok(seen.every((s) => s.server === 'registry'));
});

test('a refused upload Location stops the body stream, which is never left half-read', async () => {
  location = 'http://169.254.169.254/upload/1';
  const body = new PassThrough();
  body.write(Buffer.alloc(1024));
  await assert.rejects(
    client().uploadBlob({ registry: host(registry), repository: 'x/y' }, { open: () => body, replayable: false }),
    /refusing to follow registry/,
  );
  await new Promise((r) => setImmediate(r)); // the pipeline tears its streams down on the next tick
  assert.equal(body.destroyed, true);
});

test('a public registry cannot send an upload to loopback spelled as an IPv4-mapped IPv6 address', async () => {
  // The registry has a public name; only this Agent resolves it to our loopback server. URL
  // parsing writes [::ffff:127.0.0.1] as [::ffff:7f00:1], which the guard once did not recognise.
  const dispatcher = new Agent({
    connect: {
      lookup: (_host, opts, cb) =>
        (opts as { all?: boolean }).all ? (cb as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4),
    },
  });
  const registryName = `registry.example.test:${(registry.address() as AddressInfo).port}`;
  const c = new RegistryClient({ credentials: staticCredentials(registryName, { username: 'u', password: 'secret-pw' }), insecureRegistries: [registryName], dispatcher, retry: { attempts: 1 } });
  try {
    for (const spelled of ['[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[::127.0.0.1]']) {
      seen.length = 0;
      location = `http://${spelled}:${(elsewhere.address() as AddressInfo).port}/internal-admin/upload`;
      await assert.rejects(
        c.uploadBlob({ registry: registryName, repository: 'x/y' }, { bytes: Buffer.from('secret layer') }),
        (err: unknown) => err instanceof RegistryError && /refusing to follow registry registry\.example\.test/.test(err.message),
        spelled,
      );
      assert.deepEqual(seen.filter((s) => s.server === 'elsewhere'), [], `nothing reached the loopback service via ${spelled}`);
    }
  } finally {
    await dispatcher.close();
  }
});
