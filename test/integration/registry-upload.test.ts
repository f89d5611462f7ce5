// Uploads whose content is wrong, against the real registry behind the fault proxy (used here
// only to record the requests): a wrong digest known up front opens no session, one found
// after the POST cancels it, and the message blames the content, not the registry.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { BlobPusher, type BlobOrigin } from '../../src/build/push.ts';
import { AbortedError, DigestMismatchError, UnauthorizedError } from '../../src/errors.ts';
import { silentLogger } from '../../src/log.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes, type Descriptor, type Digest } from '../../src/oci/types.ts';
import { CANCEL_TIMEOUT_MS, RegistryClient } from '../../src/registry/client.ts';
import type { Repository } from '../../src/registry/types.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

let reg: RunningRegistry;
let proxy: FaultProxy;
let client: RegistryClient;
let repo: Repository;
before(async () => {
  reg = await startRegistry();
  proxy = await startFaultProxy(reg.url);
  client = new RegistryClient({ retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 } });
  repo = { registry: proxy.host, repository: 'upload/app' };
});
beforeEach(() => proxy.reset());
after(async () => {
  await proxy?.stop();
  await reg?.stop();
});

const calls = (): string[] => proxy.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.status}`);
/** An upload request's session: its path without the query (the state token changes). */
const session = (path: string): string => path.split('?')[0]!;

test('bytes with a wrong digest: no session is opened, and the content is blamed', async () => {
  const claimed = sha256('y');
  await assert.rejects(client.uploadBlob(repo, { bytes: Buffer.from('x'), digest: claimed }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.equal(err.found, 'content');
    assert.equal(err.message, `pushing blob ${claimed} to ${proxy.host}/upload/app: blob to push to ${proxy.host}/upload/app: digest mismatch: expected ${claimed}, content has ${sha256('x')}`);
    return true;
  });
  assert.deepEqual(calls(), []);
});

test('a stream that hashes to another digest: the session is cancelled, nothing committed', async () => {
  const data = randomBytes(5000);
  const claimed = sha256('something else');
  await assert.rejects(client.uploadBlob(repo, { open: () => Readable.from([data]), digest: claimed, replayable: false }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.match(err.message, new RegExp(`expected ${claimed}, content has ${sha256(data)}$`));
    return true;
  });
  assert.deepEqual(calls(), ['POST 202', 'PATCH 202', 'DELETE 204']);
});

test('content whose digest is known goes in one PUT after the POST (a monolithic upload)', async () => {
  const data = randomBytes(5000);
  assert.deepEqual(await client.uploadBlob(repo, { bytes: data }), { digest: sha256(data), size: 5000 });
  const copy = randomBytes(7000);
  const up = await client.uploadBlob(repo, { open: () => Readable.from([copy]), digest: sha256(copy), size: 7000, replayable: true });
  assert.deepEqual(up, { digest: sha256(copy), size: 7000 });
  assert.deepEqual(calls(), ['POST 202', 'PUT 201', 'POST 202', 'PUT 201']);
  assert.deepEqual(await client.getBlobBytes(repo, up.digest), copy);
});

test('a monolithic upload whose stream hashes to another digest: the content is blamed, the session cancelled', async () => {
  const data = randomBytes(5000);
  const claimed = sha256('something else');
  await assert.rejects(client.uploadBlob(repo, { open: () => Readable.from([data]), digest: claimed, replayable: true }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.equal(err.found, 'content');
    assert.match(err.message, new RegExp(`expected ${claimed}, content has ${sha256(data)}$`));
    return true;
  });
  // The registry refused the digest (400 DIGEST_INVALID); nothing was retried or committed.
  assert.deepEqual(calls().slice(0, 2), ['POST 202', 'PUT 400']);
  assert.equal(calls()[2]?.split(' ')[0], 'DELETE');
  assert.equal(calls().length, 3);
  assert.equal(await client.hasBlob(repo, claimed), false);
});

test('a source stream failing its own digest check mid-PATCH cancels the session too', async () => {
  const copied = new DigestMismatchError('blob sha256:1 from base/app', 'sha256:1', 'sha256:2');
  let n = 0;
  const source = new Readable({
    read() {
      if (n++ < 3) this.push(randomBytes(16_384));
      else this.destroy(copied);
    },
  });
  await assert.rejects(client.uploadBlob(repo, { open: () => source, replayable: false }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.match(err.message, /registry has sha256:2$/, 'the source registry is blamed, as the stream said');
    return true;
  });
  // The PATCH may or may not have reached the proxy before its body failed.
  const seen = calls();
  assert.equal(seen[0], 'POST 202');
  assert.equal(seen.at(-1), 'DELETE 204');
  assert.ok(!seen.some((c) => c.startsWith('PUT')), seen.join(', '));
});

// Cancelling is best effort on a path that is failing already: it must neither hide the error
// that failed the upload nor hold it. Each wrong-content path cancels its session; here every
// DELETE hangs, and all three still fail with the content's error once CANCEL_TIMEOUT_MS is up,
// not after the proxy's delay (or, with no proxy, undici's 300 s). No signal is given, as a
// library caller or the Cloud Function gives none.
test('wrong content whose DELETE hangs fails with the digest mismatch once the cancel times out', { timeout: CANCEL_TIMEOUT_MS + 10_000 }, async () => {
  proxy.failNext(Number.MAX_SAFE_INTEGER, { delayMs: CANCEL_TIMEOUT_MS + 4000, method: 'DELETE' });
  const logged: Array<Record<string, unknown>> = [];
  const logging = new RegistryClient({
    retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    logger: { ...silentLogger, debug: (message, fields) => void logged.push({ message, ...fields }) },
  });
  const claimed = sha256('something else');
  const failing = new DigestMismatchError('blob sha256:1 from base/app', 'sha256:1', 'sha256:2');
  let n = 0;
  const started = Date.now();
  const outcomes = await Promise.allSettled([
    // streamed: PATCH, then the digest is known (#sendContent)
    logging.uploadBlob(repo, { open: () => Readable.from([randomBytes(5000)]), digest: claimed, replayable: false }),
    // monolithic: the registry refuses the PUT (#commitUpload)
    logging.uploadBlob(repo, { open: () => Readable.from([randomBytes(5000)]), digest: claimed, replayable: true }),
    // a source stream failing its own check mid-PATCH (#sendBody)
    logging.uploadBlob(repo, {
      open: () => new Readable({ read() { if (n++ < 3) this.push(randomBytes(16_384)); else this.destroy(failing); } }),
      replayable: false,
    }),
  ]);
  const waited = Date.now() - started;
  for (const outcome of outcomes) {
    assert.equal(outcome.status, 'rejected');
    const err = (outcome as PromiseRejectedResult).reason as unknown;
    assert.ok(err instanceof DigestMismatchError, String(err));
  }
  assert.ok(waited >= CANCEL_TIMEOUT_MS - 100 && waited < CANCEL_TIMEOUT_MS + 3000, `failed after ${waited} ms`);
  assert.equal(proxy.requests.filter((r) => r.method === 'DELETE').length, 3, 'each session was cancelled, once');
  const failures = logged.filter((l) => l.message === 'cancelling an upload session failed (ignored)');
  assert.equal(failures.length, 3, JSON.stringify(logged));
  for (const l of failures) assert.match(String(l.url), /\/blobs\/uploads\/[^?]+\?.*_state=REDACTED/, 'logged with its state token redacted');
  proxy.reset();
});

// The abort may be what ends an upload whose content turned out wrong (Ctrl-C while the
// registry's refusal is read): the session is cancelled all the same, not under the aborted
// signal, which would keep the DELETE from being sent at all.
test('wrong content aborted by the caller still cancels its session', async () => {
  const controller = new AbortController();
  const aborting = new RegistryClient({
    retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 },
    logger: {
      ...silentLogger,
      // The moment the registry's 400 to the PUT arrives, before its body is read.
      debug: (message, fields) => {
        if (message === 'http' && fields?.method === 'PUT' && fields.status === 400) controller.abort();
      },
    },
  });
  const claimed = sha256('something else');
  const upload = aborting.uploadBlob(repo, { open: () => Readable.from([randomBytes(5000)]), digest: claimed, replayable: true }, controller.signal);
  await assert.rejects(upload, (err: unknown) => {
    assert.ok(err instanceof AbortedError, String(err));
    assert.ok(err.cause instanceof DigestMismatchError, String(err.cause));
    return true;
  });
  assert.ok(controller.signal.aborted, 'the abort came before the cancel');
  // distribution drops a session whose commit it refused (registry/handlers/blobupload.go,
  // PutBlobUploadComplete), so the DELETE may find it gone; that it was sent is the point.
  assert.deepEqual(calls().slice(0, 2), ['POST 202', 'PUT 400']);
  assert.match(calls()[2] ?? '', /^DELETE (204|404)$/);
  assert.equal(calls().length, 3);
  const [, put, deleted] = proxy.requests.filter((r) => r.method !== 'GET');
  assert.equal(session(deleted!.path), session(put!.path), 'the refused session is the one cancelled');
});

test('a manifest whose bytes do not match its digest reference blames the content', async () => {
  const ref = sha256('other');
  await assert.rejects(client.putManifest(repo, ref, Buffer.from('{}'), MediaTypes.ociManifest), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.match(err.message, new RegExp(`expected ${ref}, content has ${sha256('{}')}$`));
    return true;
  });
  assert.deepEqual(calls(), []);
});

test('a PATCH answered 201 (as Amazon ECR does) is still committed with the PUT', async () => {
  // ECR answers the PATCH of a streamed upload with 201 Created, not 202 (aws/containers-roadmap
  // #2831; regclient PR #82, "Accept a 201 on chunk upload for ECR"); go-containerregistry's
  // streamBlob accepts 202, 201 and 204. The upload is not committed until the PUT ?digest=.
  proxy.failNext(1, { method: 'PATCH', responseStatus: 201 });
  const data = randomBytes(6000);
  const up = await client.uploadBlob(repo, { open: () => Readable.from([data]), replayable: false });
  assert.deepEqual(up, { digest: sha256(data), size: 6000 });
  assert.deepEqual(calls(), ['POST 202', 'PATCH 201', 'PUT 201']);
  assert.deepEqual(await client.getBlobBytes(repo, up.digest), data);
});

test('a manifest PUT answered 202 (old distribution) is a success', async () => {
  // Old distribution releases answered a manifest PUT with 202 Accepted, and ggcr's
  // remote.Write accepts 200, 201 and 202. Any 2xx means the registry took it.
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  await client.uploadBlob(repo, { bytes: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length }, layers: [],
  }));
  proxy.reset();
  proxy.failNext(1, { method: 'PUT', match: /\/manifests\//, responseStatus: 202 });
  assert.equal(await client.putManifest(repo, 'accepted', manifest, MediaTypes.ociManifest), sha256(manifest));
  assert.deepEqual(calls(), ['PUT 202']);
  assert.equal((await client.getManifest(repo, 'accepted')).digest, sha256(manifest));
});

// A registry that declines a cross-repository mount may open an ordinary upload session and
// answer 202 Accepted with its Location, which the client MAY use (distribution spec, "Mounting
// a blob from another repository"; ggcr's remote.write does). docker-registry declines when the
// source repository lacks the blob; Amazon ECR whenever no manifest in the source references it
// (aws/containers-roadmap#2860), which is every blob of a base pushed there by digest alone.
// Cancelling that session and opening another cost two round trips per base blob.
const lacksIt = (): Repository => ({ registry: proxy.host, repository: 'upload/lacks-it' });

test("a declined mount's session (202) takes the upload: no DELETE, no second POST", async () => {
  const data = randomBytes(3000);
  const digest = sha256(data);
  const dst = { registry: proxy.host, repository: 'upload/mount-declined' };
  const mount = await client.mountBlob(dst, digest, lacksIt());
  assert.ok(!mount.mounted && mount.session, `the 202 came with its session: ${JSON.stringify(mount)}`);
  assert.deepEqual(await client.uploadBlob(dst, { bytes: data, digest }, undefined, mount.session), { digest, size: 3000 });
  assert.deepEqual(calls(), ['POST 202', 'PUT 201']);
  assert.deepEqual(await client.getBlobBytes(dst, digest), data);
});

test("a failed upload into a declined mount's session cancels it, and the retry opens a fresh one", async () => {
  const data = randomBytes(3000);
  const digest = sha256(data);
  const dst = { registry: proxy.host, repository: 'upload/mount-retried' };
  const mount = await client.mountBlob(dst, digest, lacksIt());
  assert.ok(!mount.mounted && mount.session);
  proxy.failNext(1, { status: 500, method: 'PUT', match: /\/blobs\/uploads\// });
  assert.deepEqual(await client.uploadBlob(dst, { bytes: data, digest }, undefined, mount.session), { digest, size: 3000 });
  assert.deepEqual(calls(), ['POST 202', 'PUT 500', 'DELETE 204', 'POST 202', 'PUT 201']);
  const [, failed, cancelled, , retried] = proxy.requests.filter((r) => r.method !== 'GET');
  assert.equal(session(cancelled!.path), session(failed!.path), 'the failed session is the one cancelled');
  assert.notEqual(session(retried!.path), session(failed!.path), 'the retry is not sent into it');
  assert.deepEqual(await client.getBlobBytes(dst, digest), data);
});

// A reservation's session takes the same rule as a declined mount's: a PUT that failed in it
// leaves it cancelled, not open on the registry until it expires.
test('a failed PUT into a reserved session cancels that session, and the bytes go into a fresh one', async () => {
  const data = randomBytes(1000);
  const digest = sha256(data);
  const reserved = client.reserveUpload(repo);
  proxy.failNext(1, { status: 500, method: 'PUT', match: /\/blobs\/uploads\// });
  assert.deepEqual(await reserved.upload(data), { digest, size: data.length });
  assert.deepEqual(calls(), ['POST 202', 'PUT 500', 'DELETE 204', 'POST 202', 'PUT 201']);
  const [, failed, cancelled, , retried] = proxy.requests.filter((r) => r.method !== 'GET');
  assert.equal(session(cancelled!.path), session(failed!.path), 'the failed session is the one cancelled');
  assert.notEqual(session(retried!.path), session(failed!.path), 'the retry is not sent into it');
  // Asked directly (with the session's own state token): the registry no longer knows it.
  const status = await fetch(`${reg.url}${failed!.path}`);
  assert.equal(status.status, 404, await status.text());
  await reserved.release();
  assert.equal(calls().length, 5, 'release has nothing left to cancel');
  assert.deepEqual(await client.getBlobBytes(repo, digest), data);
});

test('a reserved upload aborted during its PUT still cancels the session', async () => {
  const controller = new AbortController();
  const reserved = client.reserveUpload(repo);
  proxy.failNext(1, { delayMs: 3000, method: 'PUT', match: /\/blobs\/uploads\// });
  const upload = reserved.upload(randomBytes(1000), controller.signal);
  for (let i = 0; i < 500 && !proxy.requests.some((r) => r.method === 'PUT'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  controller.abort();
  await assert.rejects(upload, (err: unknown) => err instanceof AbortedError);
  await reserved.release();
  const put = proxy.requests.find((r) => r.method === 'PUT')!;
  const deleted = proxy.requests.filter((r) => r.method === 'DELETE');
  assert.deepEqual(deleted.map((r) => `${session(r.path)} ${r.status}`), [`${session(put.path)} 204`]);
});

test('a base blob whose mount is declined is copied into the session the 202 opened', async () => {
  const data = randomBytes(5000);
  const base = { registry: proxy.host, repository: 'upload/base' };
  const { digest } = await client.uploadBlob(base, { bytes: data });
  proxy.reset();
  // docker-registry mounts whatever its source repository has; ECR would decline this one. The
  // proxy strips the mount query, so the registry opens the ordinary session ECR answers with.
  proxy.failNext(1, { method: 'POST', match: /[?&]mount=/, rewritePath: [/\?.*$/, ''] });
  const target = { registry: proxy.host, repository: 'upload/derived' };
  const pusher = new BlobPusher(client, { concurrency: 2, logger: silentLogger });
  await pusher.ensure(target, { mediaType: MediaTypes.ociLayerGzip, digest, size: data.length }, { kind: 'registry', repo: base });
  assert.equal(proxy.pendingFaults(), 0);
  assert.deepEqual(
    proxy.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.fault ? `${r.fault} ` : ''}${r.status}`),
    ['HEAD 404', 'POST rewrite 202', 'PUT 201'],
  );
  assert.deepEqual(await client.getBlobBytes(target, digest), data);
});

// What the registry says it stored is checked against what was asked for. docker-registry never
// lies; the proxy rewrites its answer the way a broken proxy or registry would. One attempt: a
// mismatch is not worth a retry, and a retry would get the registry's honest answer.
const once = (): RegistryClient => new RegistryClient({ retry: { attempts: 1 } });
const other = sha256('something else');

async function pushManifest(tag: string): Promise<{ bytes: Buffer; digest: Digest }> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, tag }));
  await client.uploadBlob(repo, { bytes: config });
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length }, layers: [],
  }));
  return { bytes, digest: await client.putManifest(repo, tag, bytes, MediaTypes.ociManifest) };
}

test('a blob commit answered with another Docker-Content-Digest is a DigestMismatchError, not a success', async () => {
  proxy.failNext(1, { method: 'PUT', match: /\/blobs\/uploads\//, responseHeaders: { 'docker-content-digest': other } });
  const data = randomBytes(700);
  await assert.rejects(once().uploadBlob(repo, { bytes: data }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.equal(err.expected, sha256(data));
    assert.equal(err.actual, other);
    assert.equal(err.found, 'registry');
    return true;
  });
});

test('a manifest answered with a Docker-Content-Digest its bytes do not have is a DigestMismatchError', async () => {
  const { digest } = await pushManifest('claimed');
  proxy.failNext(1, { method: 'GET', match: /\/manifests\/claimed$/, responseHeaders: { 'docker-content-digest': other } });
  await assert.rejects(once().getManifest(repo, 'claimed'), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.equal(err.expected, other);
    assert.equal(err.actual, digest);
    return true;
  });
});

test('a manifest fetched by digest whose bytes have another digest is a DigestMismatchError, even with a consistent header', async () => {
  const wanted = await pushManifest('wanted');
  const served = await pushManifest('served');
  // The registry answers with the other manifest, and that manifest's own Docker-Content-Digest.
  proxy.failNext(1, { method: 'GET', match: /\/manifests\/sha256:/, rewritePath: [/manifests\/sha256:[0-9a-f]+$/, 'manifests/served'] });
  await assert.rejects(once().getManifest(repo, wanted.digest), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.equal(err.expected, wanted.digest);
    assert.equal(err.actual, served.digest);
    return true;
  });
  assert.equal(proxy.pendingFaults(), 0);
});

test('a single-pass stream refused with 401 and a new challenge is not sent again: its bytes are gone', async () => {
  // A 401 on a request with a bodiless or bytes body is re-sent once with a new token; a stream
  // has been consumed by the first send, and re-sending it would upload nothing (or hang).
  proxy.failNext(1, { method: 'PATCH', status: 401, headers: { 'www-authenticate': 'Basic realm="proxy"' } });
  let opened = 0;
  await assert.rejects(once().uploadBlob(repo, { open: () => (opened++, Readable.from([randomBytes(800)])), replayable: false }), UnauthorizedError);
  assert.equal(opened, 1);
  assert.deepEqual(calls().filter((c) => c.startsWith('PATCH')), ['PATCH 401']);
});

// BlobPusher: uploads bounded by its concurrency, one transfer per (repository, digest), and a
// failed transfer forgotten so the next ask tries again.
const bytesBlob = (data: Buffer): [Descriptor, BlobOrigin] => [
  { mediaType: MediaTypes.ociLayerGzip, digest: sha256(data), size: data.length },
  { kind: 'bytes', bytes: data },
];

test('BlobPusher: the same blob asked for twice at once is uploaded once', async () => {
  const pusher = new BlobPusher(client, { concurrency: 4, logger: silentLogger });
  const [desc, origin] = bytesBlob(randomBytes(900));
  await Promise.all([pusher.ensure(repo, desc, origin), pusher.ensure(repo, desc, origin)]);
  assert.deepEqual(calls(), ['POST 202', 'PUT 201']);
});

test('BlobPusher: a failed transfer is forgotten, so asking again uploads it', async () => {
  const pusher = new BlobPusher(client, { concurrency: 4, logger: silentLogger });
  const [desc, origin] = bytesBlob(randomBytes(900));
  proxy.failNext(1, { method: 'POST', match: /\/blobs\/uploads\/$/, status: 400 });
  await assert.rejects(pusher.ensure(repo, desc, origin), /400/);
  await pusher.ensure(repo, desc, origin);
  assert.deepEqual(calls(), ['POST 400', 'POST 202', 'PUT 201']);
  assert.equal(await client.hasBlob(repo, desc.digest), true);
});

test('BlobPusher: no more uploads run at once than its concurrency', async () => {
  const pusher = new BlobPusher(client, { concurrency: 2, logger: silentLogger });
  // Slow answers, so uploads that were not held back would overlap at the proxy.
  proxy.failNext(12, { method: 'POST', match: /\/blobs\/uploads\/$/, delayMs: 50 });
  await Promise.all(Array.from({ length: 6 }, () => pusher.ensure(repo, ...bytesBlob(randomBytes(500)))));
  const uploads = proxy.requests.filter((r) => r.method === 'POST' || r.method === 'PUT');
  assert.equal(uploads.length, 12);
  assert.equal(Math.max(...uploads.map((r) => r.inFlight)), 2);
});

test('a mount from a repository on another registry is declined without a request', async () => {
  // The mount POST names only the source repository: sent anyway, it would ask this registry
  // (and its token server) about an unrelated repository of the same name.
  const mount = await client.mountBlob(repo, sha256('x'), { registry: 'elsewhere.example', repository: 'upload/app' });
  assert.deepEqual(mount, { mounted: false });
  assert.deepEqual(proxy.requests, []);
});
