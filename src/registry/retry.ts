/**
 * One retry policy for registry requests, in the spirit of undici's `RetryHandler` and
 * nodejs-storage's `RetryOptions`. The client retries whole steps (one manifest GET, one blob
 * upload from POST to PUT) at this one level, and only when the request body can be replayed.
 * A single-pass stream's upload is split: opening and committing the session are retried, the
 * PATCH that consumes the stream runs once; callers may retry that at a higher level (rebuilding
 * the stream) if they wish.
 */
import { AbortedError, ArtificerError, BlobStorageError, NetworkError, RegistryError, SourceError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface RetryPolicy {
  /** Total attempts, the first included. 1 disables retries. */
  readonly attempts: number;
  /** Delay before the first retry. */
  readonly baseDelayMs: number;
  /** Each further retry waits `factor` times longer … */
  readonly factor: number;
  /** … up to this cap. */
  readonly maxDelayMs: number;
  /** "Full jitter": wait a uniformly random time in [delay/2, delay], so clients spread out. */
  readonly jitter: boolean;
  /** HTTP statuses worth another try. */
  readonly retryableStatuses: readonly number[];
  /** Socket-level error codes (Node `err.code`, undici `UND_ERR_*`) worth another try. */
  readonly retryableErrorCodes: readonly string[];
  /** Longest `Retry-After` honoured; a registry asking for more fails the step instead. */
  readonly maxRetryAfterMs: number;
}

/**
 * The defaults: 5 attempts, 200 ms doubling up to 10 s with jitter (≈ 0.2+0.4+0.8+1.6 s
 * before giving up on a flapping registry), 408/429/5xx, connection resets/refusals/timeouts.
 */
export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  attempts: 5,
  baseDelayMs: 200,
  factor: 2,
  maxDelayMs: 10_000,
  jitter: true,
  retryableStatuses: Object.freeze([408, 429, 500, 502, 503, 504]),
  retryableErrorCodes: Object.freeze([
    'ECONNRESET',
    'ECONNREFUSED',
    'ECONNABORTED',
    'EPIPE',
    'ETIMEDOUT',
    'EAI_AGAIN',
    'ENETUNREACH',
    'EHOSTUNREACH',
    'UND_ERR_SOCKET',
    'UND_ERR_CONNECT_TIMEOUT',
    'UND_ERR_HEADERS_TIMEOUT',
    'UND_ERR_BODY_TIMEOUT',
    'UND_ERR_CLOSED',
  ]),
  maxRetryAfterMs: 60_000,
});

export function retryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  return Object.freeze({ ...DEFAULT_RETRY_POLICY, ...overrides });
}

const retryAfter = new WeakMap<object, number>();

/** Records a server's `Retry-After` (in ms) on an error, for {@link withRetry}. */
export function setRetryAfter(err: object, ms: number): void {
  retryAfter.set(err, ms);
}

/** `Retry-After: 120` or an HTTP date → milliseconds, or undefined. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function errorCodes(err: unknown): string[] {
  const codes: string[] = [];
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') codes.push(code);
  }
  return codes;
}

/** Whether `err` is worth another attempt under `policy`. */
export function isRetryable(err: unknown, policy: RetryPolicy): boolean {
  if (err instanceof AbortedError) return false;
  // A refused signed storage URL: the retried step asks the registry for a fresh one.
  if (err instanceof BlobStorageError) return true;
  if (err instanceof RegistryError) return err.status !== undefined && policy.retryableStatuses.includes(err.status);
  if (err instanceof NetworkError) return errorCodes(err).some((c) => policy.retryableErrorCodes.includes(c));
  // The files themselves: a temporary source error (a pinned Cloud Storage generation gone)
  // asks for the whole build to be retried, which lists the files again; re-reading them here
  // would only fail the same way.
  if (err instanceof SourceError) return false;
  // Ours and not a registry answer: retried when it says it may pass (a credential provider
  // whose metadata server hiccupped), never for a mistake.
  if (err instanceof ArtificerError) return err.temporary;
  return errorCodes(err).some((c) => policy.retryableErrorCodes.includes(c));
}

/** Delay before retry number `retry` (1-based), without Retry-After. */
export function backoffDelay(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const raw = Math.min(policy.maxDelayMs, policy.baseDelayMs * policy.factor ** (retry - 1));
  return policy.jitter ? raw / 2 + (random() * raw) / 2 : raw;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError('aborted', { cause: signal.reason }));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AbortedError('aborted', { cause: signal?.reason }));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryOptions {
  readonly signal?: AbortSignal | undefined;
  readonly logger?: Logger | undefined;
  /** What is being retried, for the log ("GET manifest …"). */
  readonly what?: string;
  /** False when the step consumes a single-pass body: then it runs exactly once. */
  readonly replayable?: boolean;
}

/**
 * Runs `fn` until it succeeds, fails with a non-retryable error, or `policy.attempts` is
 * reached; then rethrows the last error unchanged. `fn` receives the attempt number (1-based).
 */
export async function withRetry<T>(policy: RetryPolicy, fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.replayable === false ? 1 : Math.max(1, policy.attempts);
  for (let attempt = 1; ; attempt++) {
    if (opts.signal?.aborted) throw new AbortedError('aborted', { cause: opts.signal.reason });
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || opts.signal?.aborted || !isRetryable(err, policy)) throw err;
      const hinted = err !== null && typeof err === 'object' ? retryAfter.get(err) : undefined;
      if (hinted !== undefined && hinted > policy.maxRetryAfterMs) throw err;
      const delay = Math.max(hinted ?? 0, backoffDelay(policy, attempt));
      opts.logger?.debug('retrying', {
        what: opts.what,
        attempt,
        of: attempts,
        delayMs: Math.round(delay),
        error: err instanceof Error ? err.message : String(err),
      });
      await sleep(delay, opts.signal);
    }
  }
}
