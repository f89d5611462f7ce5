import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AbortedError,
  ArtificerError,
  BlobStorageError,
  DeniedError,
  DigestMismatchError,
  InvalidReferenceError,
  InvalidSpecError,
  ManifestUnknownError,
  NetworkError,
  OutputError,
  PlatformMismatchError,
  RegistryError,
  SourceError,
  TargetNotAllowedError,
  UnauthorizedError,
  UnsupportedError,
  UsageError,
  asOutputError,
  describeFsError,
  redactHeaders,
  redactUrl,
  registryErrorSummary,
  withContext,
} from '../../src/errors.ts';

const url = 'https://user:hunter2@reg.example.com/v2/app/blobs/uploads/abc?_state=SECRET&digest=sha256:1';
const cases: Array<[ArtificerError, string, string, RegExp, boolean]> = [
  [new UsageError('bad flag'), 'UsageError', 'ARTIFICER_USAGE', /^bad flag$/, false],
  [new InvalidReferenceError('Alpine', 'repository name must be lowercase'), 'InvalidReferenceError', 'ARTIFICER_INVALID_REFERENCE', /^invalid image reference "Alpine": repository name must be lowercase$/, false],
  [new InvalidSpecError('/env/0', 'expected KEY=VALUE'), 'InvalidSpecError', 'ARTIFICER_INVALID_SPEC', /^spec \/env\/0: expected KEY=VALUE$/, false],
  [new SourceError('conf/fifo', 'is a FIFO'), 'SourceError', 'ARTIFICER_SOURCE', /^conf\/fifo: is a FIFO$/, false],
  [new ManifestUnknownError('localhost:5000/base:nope'), 'ManifestUnknownError', 'ARTIFICER_MANIFEST_UNKNOWN', /image localhost:5000\/base:nope not found/, false],
  [new PlatformMismatchError('b:1', 'linux/s390x', ['linux/amd64', 'linux/arm64']), 'PlatformMismatchError', 'ARTIFICER_PLATFORM_MISMATCH', /no linux\/s390x variant; available: linux\/amd64, linux\/arm64/, false],
  [new RegistryError('pushing', { method: 'PUT', url, status: 503 }), 'RegistryError', 'ARTIFICER_REGISTRY', /^pushing$/, true],
  [new RegistryError('pushing', { method: 'PUT', url, status: 400 }), 'RegistryError', 'ARTIFICER_REGISTRY', /^pushing$/, false],
  [new UnauthorizedError('reg.example.com', 'docker config /x/config.json', 'push', { method: 'POST', url, status: 401 }), 'UnauthorizedError', 'ARTIFICER_UNAUTHORIZED', /unauthorized to push on reg.example.com \(credentials tried: docker config \/x\/config.json\)/, false],
  [new DeniedError('reg.example.com', 'anonymous', 'push', { method: 'POST', url, status: 403 }), 'DeniedError', 'ARTIFICER_DENIED', /denied: not allowed to push on reg.example.com/, false],
  [new BlobStorageError('s3.example.com', { method: 'GET', url: 'https://s3.example.com/b?X-Amz-Signature=s', status: 403 }), 'BlobStorageError', 'ARTIFICER_REGISTRY', /^blob storage s3\.example\.com answered 403 to GET https:\/\/s3\.example\.com\/b\?X-Amz-Signature=REDACTED: it refused the signed URL/, true],
  [new NetworkError('connect ECONNREFUSED'), 'NetworkError', 'ARTIFICER_NETWORK', /ECONNREFUSED/, true],
  [new DigestMismatchError('manifest', 'sha256:a', 'sha256:b'), 'DigestMismatchError', 'ARTIFICER_DIGEST_MISMATCH', /expected sha256:a, registry has sha256:b/, false],
  [new DigestMismatchError('blob to push', 'sha256:a', 'sha256:b', 'content'), 'DigestMismatchError', 'ARTIFICER_DIGEST_MISMATCH', /^blob to push: digest mismatch: expected sha256:a, content has sha256:b$/, false],
  [new UnsupportedError('schema1'), 'UnsupportedError', 'ARTIFICER_UNSUPPORTED', /schema1/, false],
  [new TargetNotAllowedError('evil.example.com/x'), 'TargetNotAllowedError', 'ARTIFICER_TARGET_NOT_ALLOWED', /evil.example.com\/x is not in ARTIFICER_ALLOWED_TARGETS/, false],
  [new AbortedError(), 'AbortedError', 'ARTIFICER_ABORTED', /aborted/, false],
  [new OutputError('/ro/image.tar', 'read-only file system'), 'OutputError', 'ARTIFICER_OUTPUT', /^cannot write \/ro\/image.tar: read-only file system$/, false],
];

for (const [err, name, code, message, temporary] of cases) {
  test(`${name} (${code})`, () => {
    assert.ok(err instanceof ArtificerError);
    assert.ok(err instanceof Error);
    assert.equal(err.name, name);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    assert.equal(err.temporary, temporary);
  });
}

test('registry errors keep status and method and never the secrets of the URL', () => {
  const err = new RegistryError('x', { method: 'PATCH', url, status: 500, errors: [{ code: 'BLOB_UPLOAD_UNKNOWN' }] });
  assert.equal(err.status, 500);
  assert.equal(err.method, 'PATCH');
  assert.doesNotMatch(err.url, /hunter2|SECRET/);
  assert.match(err.url, /reg\.example\.com\/v2\/app\/blobs\/uploads\/abc/);
  assert.deepEqual(err.errors, [{ code: 'BLOB_UPLOAD_UNKNOWN' }]);
});

test("401/403 messages carry the registry's own explanation", () => {
  const errors = [{ code: 'DENIED', message: 'storage quota exceeded for namespace team (10 GiB)' }];
  const denied = new DeniedError('reg.example.com', 'anonymous', 'push team/app', { method: 'PUT', url, status: 403, errors });
  assert.equal(denied.message, 'denied: not allowed to push team/app on reg.example.com (credentials used: anonymous); the registry says: DENIED: storage quota exceeded for namespace team (10 GiB)');
  const unauthorized = new UnauthorizedError('reg.example.com', 'anonymous', 'pull a', { method: 'GET', url, status: 401, errors: [{ code: 'UNAUTHORIZED' }] });
  assert.match(unauthorized.message, /\(credentials tried: anonymous\); the registry says: UNAUTHORIZED$/);
  assert.doesNotMatch(new DeniedError('r', 's', 'push a', { method: 'PUT', url, status: 403 }).message, /registry says/);
});

test('registryErrorSummary: control characters out, URLs redacted, bounded', () => {
  assert.equal(
    registryErrorSummary([{ code: 'DENIED', message: 'see\u001b[31m https://u:pw@auth.example.com/t?token=abc\n now' }, { code: 'X' }]),
    'DENIED: see [31m https://REDACTED@auth.example.com/t?token=REDACTED now; X',
  );
  const long = registryErrorSummary([{ code: 'DENIED', message: 'x'.repeat(1000) }]);
  assert.equal(long.length, 300);
  assert.ok(long.endsWith('…'));
  assert.equal(registryErrorSummary(undefined), '');
});

test('redactUrl and redactHeaders', () => {
  assert.equal(redactUrl('http://a:b@h/p?access_token=t&x=1'), 'http://REDACTED@h/p?access_token=REDACTED&x=1');
  assert.equal(redactUrl('not a url //u:p@host'), 'not a url //REDACTED@host');
  // Signed blob URLs: Docker Hub (Cloudflare) and CloudFront.
  assert.equal(
    redactUrl('https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data?verify=1700000000-AbCdEfHmacSig'),
    'https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data?verify=REDACTED',
  );
  assert.equal(redactUrl('https://d1.cloudfront.net/b?Expires=1&Policy=p&Signature=s&Key-Pair-Id=k'), 'https://d1.cloudfront.net/b?Expires=1&Policy=REDACTED&Signature=REDACTED&Key-Pair-Id=REDACTED');
  assert.deepEqual(redactHeaders({ Authorization: 'Bearer abc', 'content-type': 'x' }), { Authorization: 'REDACTED', 'content-type': 'x' });
});

test('redactUrl with the registry origin redacts every query value elsewhere, keeping the path', () => {
  const origin = 'https://reg.example.com';
  assert.equal(redactUrl('https://storage.example.net/bucket/sha256/ab?hmac=x1&exp=2&u=a:b@c', origin), 'https://storage.example.net/bucket/sha256/ab?hmac=REDACTED&exp=REDACTED&u=REDACTED');
  assert.equal(redactUrl('https://reg.example.com/v2/a/blobs/uploads/u?digest=sha256%3A1&_state=s', origin), 'https://reg.example.com/v2/a/blobs/uploads/u?digest=sha256%3A1&_state=REDACTED');
});

test('withContext prefixes once and keeps the class', () => {
  const err = withContext(new NetworkError('reset'), 'pushing blob sha256:1');
  assert.ok(err instanceof NetworkError);
  assert.equal(err.message, 'pushing blob sha256:1: reset');
  assert.equal(withContext(err, 'pushing blob sha256:1').message, 'pushing blob sha256:1: reset');
});

test('withContext leaves a shared error alone: each caller gets its own context', () => {
  const cause = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  const shared = new UnauthorizedError('reg.example.com', 'static', 'pull a', { method: 'GET', url: 'https://reg.example.com/token', status: 401 });
  const withCause = new NetworkError('reset', { cause });
  const a = withContext(shared, 'checking blob a');
  const b = withContext(shared, 'checking blob b');
  assert.equal(shared.message, 'unauthorized to pull a on reg.example.com (credentials tried: static)');
  assert.equal(a.message, `checking blob a: ${shared.message}`);
  assert.equal(b.message, `checking blob b: ${shared.message}`);
  for (const e of [a, b]) {
    assert.ok(e instanceof UnauthorizedError && e instanceof RegistryError && e instanceof ArtificerError);
    assert.equal(e.name, 'UnauthorizedError');
    assert.equal(e.code, 'ARTIFICER_UNAUTHORIZED');
    assert.equal(e.status, 401);
    assert.equal(e.credentialSource, 'static');
    assert.equal(e.temporary, false);
    assert.match(e.stack!, new RegExp(`^UnauthorizedError: ${e.message.replace(/[()]/g, '\\$&')}\n`));
  }
  const n = withContext(withCause, 'pushing blob sha256:1');
  assert.equal(n.cause, cause, 'the root cause stays one step away');
  assert.equal(withCause.message, 'reset');
});

test('asOutputError turns file-system errors into OutputError and leaves others alone', () => {
  const eacces = Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES' });
  const out = asOutputError('/x/layout', eacces);
  assert.ok(out instanceof OutputError);
  assert.equal(out.message, 'cannot write /x/layout: permission denied');
  assert.equal(out.cause, eacces);
  const mine = new UsageError('no');
  assert.equal(asOutputError('/x', mine), mine);
  const bug = new TypeError('x is undefined');
  assert.equal(asOutputError('/x', bug), bug);
});

test('describeFsError: one wording for every source that reads files', () => {
  const e = (code: string): Error => Object.assign(new Error(`${code}: raw, /some/path`), { code });
  assert.deepEqual(
    ['ENOENT', 'EACCES', 'EPERM', 'ENOTDIR', 'EISDIR', 'ELOOP', 'EIO'].map((c) => describeFsError(e(c))),
    ['no such file or directory', 'permission denied', 'permission denied', 'a component of the path is not a directory', 'is a directory', 'too many levels of symbolic links', 'EIO: raw, /some/path'],
  );
  assert.equal(describeFsError('odd'), 'odd');
});
