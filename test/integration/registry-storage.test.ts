// Blob storage a registry redirects to (S3, GCS, Docker Hub's Cloudflare): a small node:http
// "registry" answers blob GETs with a 307 to a signed URL on a second server standing in for it.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createHash } from 'node:crypto';
import { BlobStorageError, DeniedError, RegistryError, UnauthorizedError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { Digest } from '../../src/oci/types.ts';

const HMAC = 'Cy4zDsyi3KttvHMoDxRlm0ey%2BlI%3D';
const digest = `sha256:${'a'.repeat(64)}` as Digest;
const refused = { status: 403, body: '<Error><Code>SignatureDoesNotMatch</Code></Error>' };
/** What blob storage answers, in turn; the last answer repeats. */
let storageAnswers: Array<{ status: number; body: string }> = [refused];
let storageHits = 0;

function listen(handler: http.RequestListener): Promise<http.Server> {
  const server = http.createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
const host = (s: http.Server): string => `127.0.0.1:${(s.address() as AddressInfo).port}`;

let storage: http.Server;
let registry: http.Server;
before(async () => {
  storage = await listen((_req, res) => {
    const answer = storageAnswers[Math.min(storageHits++, storageAnswers.length - 1)]!;
    res.writeHead(answer.status).end(answer.body);
  });
  registry = await listen((req, res) => {
    if (req.url === '/v2/') return void res.writeHead(200).end();
    res.writeHead(307, { location: `http://${host(storage)}/registry-v2/docker/registry/v2/blobs/sha256/aa/${'a'.repeat(64)}/data?verify=1707288743-${HMAC}&region=eu` }).end();
  });
});
after(() => {
  storage.closeAllConnections();
  registry.closeAllConnections();
  storage.close();
  registry.close();
});

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const rec = (m: string, f?: Record<string, unknown>): void => void lines.push(`${m} ${JSON.stringify(f ?? {})}`);
  return { lines, debug: rec, info: rec, warn: rec };
}

test('storage refusing a signed URL (403/401) is BlobStorageError naming the storage, not denied on the registry', async () => {
  for (const status of [403, 401]) {
    storageAnswers = [{ ...refused, status }];
    storageHits = 0;
    const client = new RegistryClient({ retry: { attempts: 1 } });
    await assert.rejects(client.getBlobBytes({ registry: host(registry), repository: 'private/app' }, digest), (err: unknown) => {
      assert.ok(err instanceof BlobStorageError, String(err));
      assert.ok(err instanceof RegistryError && !(err instanceof DeniedError) && !(err instanceof UnauthorizedError));
      assert.equal(err.code, 'ARTIFICER_REGISTRY');
      assert.equal(err.status, status);
      assert.equal(err.temporary, true);
      assert.equal(err.storageHost, host(storage));
      assert.match(err.message, new RegExp(`blob storage ${host(storage).replace(/\./g, '\\.')} answered ${status} to GET `));
      assert.doesNotMatch(err.message, /not allowed to|unauthorized to|credentials (used|tried)/);
      return true;
    });
  }
});

test('a refused storage URL is retried: the registry hands out a fresh one', async () => {
  const blob = Buffer.from('layer bytes from storage');
  const blobDigest = `sha256:${createHash('sha256').update(blob).digest('hex')}` as Digest;
  storageAnswers = [refused, { status: 200, body: blob.toString() }];
  storageHits = 0;
  const client = new RegistryClient({ retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 } });
  assert.deepEqual(await client.getBlobBytes({ registry: host(registry), repository: 'private/app' }, blobDigest), blob);
  assert.equal(storageHits, 2);
});

test('the signature of a signed storage URL is in no error and no log line', async () => {
  storageAnswers = [refused];
  const logger = recordingLogger();
  const client = new RegistryClient({ logger, retry: { attempts: 1 } });
  let caught: unknown;
  await client.getBlobBytes({ registry: host(registry), repository: 'private/app' }, digest).catch((err: unknown) => (caught = err));
  assert.ok(caught instanceof RegistryError, String(caught));
  const everything = [caught.message, caught.url, JSON.stringify(caught), ...logger.lines].join('\n');
  assert.ok(!everything.includes(HMAC) && !everything.includes('1707288743'), everything);
  assert.match(caught.url, /\/registry-v2\/docker\/registry\/v2\/blobs\/sha256\/aa\/a+\/data\?verify=REDACTED&region=REDACTED$/);
  assert.ok(logger.lines.some((l) => l.includes('verify=REDACTED')), 'the storage request is still logged, with its path');
});
