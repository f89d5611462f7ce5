import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AbortedError, ArtificerError, BlobStorageError, DigestMismatchError, NetworkError, RegistryError, SourceError, UsageError } from '../../src/errors.ts';
import { DEFAULT_RETRY_POLICY, backoffDelay, isRetryable, parseRetryAfter, retryPolicy, setRetryAfter, withRetry } from '../../src/registry/retry.ts';

const fast = retryPolicy({ baseDelayMs: 1, maxDelayMs: 2, jitter: false });
const status = (s: number): RegistryError => new RegistryError(`status ${s}`, { method: 'GET', url: 'http://x/', status: s });
const net = (code: string): NetworkError => new NetworkError(code, { cause: Object.assign(new Error(code), { code }) });

test('documented defaults', () => {
  assert.equal(DEFAULT_RETRY_POLICY.attempts, 5);
  assert.equal(DEFAULT_RETRY_POLICY.baseDelayMs, 200);
  assert.equal(DEFAULT_RETRY_POLICY.factor, 2);
  assert.equal(DEFAULT_RETRY_POLICY.maxDelayMs, 10_000);
  assert.equal(DEFAULT_RETRY_POLICY.jitter, true);
  assert.ok(Object.isFrozen(DEFAULT_RETRY_POLICY));
});

const retryable: Array<[string, unknown, boolean]> = [
  ['408', status(408), true],
  ['429', status(429), true],
  ['500', status(500), true],
  ['502 (a load balancer in front of the registry)', status(502), true],
  ['503', status(503), true],
  ['504 (a gateway timeout)', status(504), true],
  ['400', status(400), false],
  ['401', status(401), false],
  ['404', status(404), false],
  ['403 from blob storage (a fresh redirect usually works)', new BlobStorageError('s3.example.com', { method: 'GET', url: 'https://s3.example.com/b', status: 403 }), true],
  ['ECONNRESET', net('ECONNRESET'), true],
  ['ECONNREFUSED', net('ECONNREFUSED'), true],
  ['UND_ERR_SOCKET', net('UND_ERR_SOCKET'), true],
  ['EPIPE', net('EPIPE'), true],
  ['ENOTFOUND (DNS says no)', net('ENOTFOUND'), false],
  ['digest mismatch', new DigestMismatchError('x', 'a', 'b'), false],
  ['aborted', new AbortedError(), false],
  ['a credential provider hiccup marked temporary (metadata server)', new ArtificerError('ARTIFICER_UNAUTHORIZED', 'no token yet', { temporary: true }), true],
  ['a usage error', new UsageError('bad'), false],
  ['a temporary source error (the whole build retries, listing the files again)', new SourceError('gs://b/o', 'gone', { temporary: true }), false],
  ['plain error with a socket code', Object.assign(new Error('x'), { code: 'ECONNRESET' }), true],
  ['plain error', new Error('x'), false],
];
for (const [name, err, expected] of retryable) {
  test(`isRetryable: ${name} → ${expected}`, () => assert.equal(isRetryable(err, DEFAULT_RETRY_POLICY), expected));
}

test('backoff doubles up to the cap; jitter stays within [d/2, d]', () => {
  const p = retryPolicy({ jitter: false });
  assert.deepEqual([1, 2, 3, 4, 10].map((n) => backoffDelay(p, n)), [200, 400, 800, 1600, 10_000]);
  const j = retryPolicy({ jitter: true });
  assert.equal(backoffDelay(j, 2, () => 0), 200);
  assert.equal(backoffDelay(j, 2, () => 1), 400);
});

test('parseRetryAfter: seconds and HTTP dates', () => {
  assert.equal(parseRetryAfter('3'), 3000);
  assert.equal(parseRetryAfter(undefined), undefined);
  assert.equal(parseRetryAfter('soon'), undefined);
  const now = Date.parse('2024-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('Mon, 01 Jan 2024 00:00:05 GMT', now), 5000);
});

test('withRetry retries temporary failures until success', async () => {
  const seen: number[] = [];
  const result = await withRetry(fast, async (attempt) => {
    seen.push(attempt);
    if (attempt < 3) throw status(503);
    return 'ok';
  });
  assert.equal(result, 'ok');
  assert.deepEqual(seen, [1, 2, 3]);
});

test('withRetry gives up after `attempts` and rethrows the last error unchanged', async () => {
  let calls = 0;
  const last = status(502);
  await assert.rejects(withRetry(retryPolicy({ ...fast, attempts: 3 }), async () => {
    calls++;
    throw calls === 3 ? last : status(503);
  }), (err) => err === last);
  assert.equal(calls, 3);
});

test('withRetry does not retry permanent errors or single-pass bodies', async () => {
  let calls = 0;
  await assert.rejects(withRetry(fast, async () => {
    calls++;
    throw status(400);
  }));
  assert.equal(calls, 1);
  calls = 0;
  await assert.rejects(withRetry(fast, async () => {
    calls++;
    throw status(503);
  }, { replayable: false }));
  assert.equal(calls, 1);
});

test('withRetry honours Retry-After, and refuses one longer than maxRetryAfterMs', async () => {
  let calls = 0;
  const started = Date.now();
  await withRetry(fast, async () => {
    if (++calls === 1) {
      const e = status(429);
      setRetryAfter(e, 150);
      throw e;
    }
  });
  assert.ok(Date.now() - started >= 140, 'waited for Retry-After');
  calls = 0;
  await assert.rejects(withRetry(retryPolicy({ ...fast, maxRetryAfterMs: 1000 }), async () => {
    calls++;
    const e = status(503);
    setRetryAfter(e, 5000);
    throw e;
  }));
  assert.equal(calls, 1);
});

test('withRetry stops waiting when aborted', async () => {
  const ac = new AbortController();
  let calls = 0;
  const p = withRetry(retryPolicy({ baseDelayMs: 10_000, jitter: false }), async () => {
    calls++;
    throw status(503);
  }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 20);
  const started = Date.now();
  await assert.rejects(p, AbortedError);
  assert.ok(Date.now() - started < 2000);
  assert.equal(calls, 1);
});

test('withRetry logs each retry through the logger', async () => {
  const lines: Array<Record<string, unknown> | undefined> = [];
  const logger = { debug: (_m: string, f?: Record<string, unknown>) => void lines.push(f), info() {}, warn() {} };
  let calls = 0;
  await withRetry(fast, async () => {
    if (++calls < 3) throw status(500);
  }, { logger, what: 'pushing blob x' });
  assert.equal(lines.length, 2);
  assert.equal(lines[0]?.what, 'pushing blob x');
  assert.equal(lines[0]?.attempt, 1);
});
