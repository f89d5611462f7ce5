/**
 * The function's settings, a pure function of the environment (tested with a table). Read once
 * per event, never at import time.
 *
 * | variable | meaning |
 * |---|---|
 * | `ARTIFICER_ALLOWED_TARGETS` | comma-separated repository prefixes the function may push to (`us-docker.pkg.dev/p/r/`, `us-docker.pkg.dev/p/r/app`); unset or empty: nothing is allowed |
 * | `ARTIFICER_INSECURE_REGISTRIES` | hosts spoken to over plain HTTP (loopback hosts always are) |
 * | `ARTIFICER_GOOGLE_REGISTRIES` | test/dev knob: extra hosts that receive the service account's token, like *.pkg.dev |
 * | `ARTIFICER_REBUILD_PREFIX` | `gs://bucket/prefix/`: where Artifact Registry notifications look for specs to rebuild |
 * | `ARTIFICER_REBUILD_TOPIC` | `projects/P/topics/T`: where a base-image notification publishes one `{bucket, object}` rebuild message per affected spec (each spec then builds in its own invocation, with its own deadline and retries) |
 * | `ARTIFICER_MAX_EVENT_AGE` | seconds, at least 300; a temporary failure of an older event is recorded as failed instead of retried, and an older event whose last attempt did not finish (killed, or thrown to be retried) is settled without a build (default 3600) |
 * | `ARTIFICER_BUILD_TIMEOUT` | seconds one build may take before its first tag; past it the build is abandoned and recorded as failed (default 500: under the function's 540 s timeout, so the record is still written); a started tag set is finished |
 * | `ARTIFICER_REGISTRY_RETRY_ATTEMPTS` | attempts per registry request inside one run (default: the client's, 5) |
 * | `ARTIFICER_LOG_LEVEL` | `debug` \| `info` (default) \| `warning` |
 * | `SOURCE_DATE_EPOCH` | timestamp of the files and the image config (default 0) |
 */
import { UsageError } from '../errors.ts';
import { MAX_MTIME } from '../layer/tar.ts';
import { parseGoogleRegistries } from './google-credentials.ts';

export type LogLevel = 'debug' | 'info' | 'warning';

export interface FunctionConfig {
  readonly allowedTargets: readonly string[];
  readonly insecureRegistries: readonly string[];
  readonly googleRegistries: readonly string[];
  readonly rebuild?: { readonly bucket: string; readonly prefix: string };
  /** Full topic name the base-image fan-out publishes spec rebuilds to. */
  readonly rebuildTopic?: string;
  readonly maxEventAgeMs: number;
  readonly buildTimeoutMs: number;
  readonly registryRetryAttempts?: number;
  readonly logLevel: LogLevel;
  readonly sourceDateEpoch: number;
}

export const DEFAULT_MAX_EVENT_AGE_SECONDS = 3600;
/**
 * Least `ARTIFICER_MAX_EVENT_AGE`: an event older than it whose last attempt did not finish is
 * settled without a build, so it must leave room for the retries of a young event, those of a
 * file not uploaded yet included: above the handler's 3-minute `MISSING_FILE_GRACE_MS` (a
 * unit test checks), else a spec whose files are still arriving could be settled as "did not
 * finish" while its retries were still meant to wait for them.
 */
export const MIN_MAX_EVENT_AGE_SECONDS = 300;
export const DEFAULT_BUILD_TIMEOUT_SECONDS = 500;

function list(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * A whole number in decimal digits, at least `min`; `fallback` when unset. `Number()` alone took
 * `1e3` and `0x10`, and a 0 where it means nothing (no time for a build, no attempt at a request)
 * was quietly raised to 1: both are refused, naming the variable.
 */
function wholeNumber(name: string, v: string | undefined, fallback: number | undefined, min = 0): number | undefined {
  if (v === undefined || v.trim() === '') return fallback;
  const n = /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${name} must be a non-negative integer in decimal digits, got "${v}"`);
  if (n < min) throw new UsageError(`${name} must be at least ${min}, got "${v}"`);
  return n;
}

function sourceDateEpoch(v: string | undefined): number {
  const n = wholeNumber('SOURCE_DATE_EPOCH', v, 0) ?? 0;
  if (n > MAX_MTIME) throw new UsageError(`SOURCE_DATE_EPOCH must be at most ${MAX_MTIME} (2038-01-19T03:14:07Z, the latest a layer's tar records), got "${v}"`);
  return n;
}

export function parseFunctionConfig(env: Readonly<Record<string, string | undefined>>): FunctionConfig {
  const allowedTargets = list(env.ARTIFICER_ALLOWED_TARGETS).map((p) => {
    const lower = p.toLowerCase();
    if (!/^[a-z0-9.-]+(:\d+)?(\/|$)/.test(lower) || lower.includes('*')) {
      throw new UsageError(`ARTIFICER_ALLOWED_TARGETS entry "${p}" must be a repository prefix like us-docker.pkg.dev/project/repo/`);
    }
    return lower;
  });
  let rebuild: FunctionConfig['rebuild'];
  const rp = env.ARTIFICER_REBUILD_PREFIX?.trim();
  if (rp) {
    const m = /^gs:\/\/([a-z0-9][a-z0-9._-]{1,221}[a-z0-9])\/?(.*)$/.exec(rp);
    if (!m) throw new UsageError(`ARTIFICER_REBUILD_PREFIX must look like gs://bucket/prefix/, got "${rp}"`);
    rebuild = { bucket: m[1]!, prefix: m[2] ?? '' };
  }
  const rebuildTopic = env.ARTIFICER_REBUILD_TOPIC?.trim();
  if (rebuildTopic && !/^projects\/[a-z][a-z0-9.:-]{0,62}\/topics\/[A-Za-z][\w.~+%-]{2,254}$/.test(rebuildTopic)) {
    throw new UsageError(`ARTIFICER_REBUILD_TOPIC must be a full topic name like projects/my-project/topics/artificer-rebuild, got "${rebuildTopic}"`);
  }
  const level = (env.ARTIFICER_LOG_LEVEL ?? 'info').toLowerCase();
  if (level !== 'debug' && level !== 'info' && level !== 'warning') {
    throw new UsageError(`ARTIFICER_LOG_LEVEL must be debug, info or warning, got "${env.ARTIFICER_LOG_LEVEL}"`);
  }
  const attempts = wholeNumber('ARTIFICER_REGISTRY_RETRY_ATTEMPTS', env.ARTIFICER_REGISTRY_RETRY_ATTEMPTS, undefined, 1);
  const maxEventAge = wholeNumber('ARTIFICER_MAX_EVENT_AGE', env.ARTIFICER_MAX_EVENT_AGE, DEFAULT_MAX_EVENT_AGE_SECONDS) ?? 0;
  if (maxEventAge < MIN_MAX_EVENT_AGE_SECONDS) {
    throw new UsageError(`ARTIFICER_MAX_EVENT_AGE must be at least ${MIN_MAX_EVENT_AGE_SECONDS} seconds (an older event whose last attempt did not finish is settled without a build), got "${env.ARTIFICER_MAX_EVENT_AGE}"`);
  }
  return {
    allowedTargets,
    insecureRegistries: list(env.ARTIFICER_INSECURE_REGISTRIES),
    googleRegistries: parseGoogleRegistries(env.ARTIFICER_GOOGLE_REGISTRIES),
    ...(rebuild ? { rebuild } : {}),
    ...(rebuildTopic ? { rebuildTopic } : {}),
    maxEventAgeMs: maxEventAge * 1000,
    buildTimeoutMs: (wholeNumber('ARTIFICER_BUILD_TIMEOUT', env.ARTIFICER_BUILD_TIMEOUT, DEFAULT_BUILD_TIMEOUT_SECONDS, 1) ?? DEFAULT_BUILD_TIMEOUT_SECONDS) * 1000,
    ...(attempts !== undefined ? { registryRetryAttempts: attempts } : {}),
    logLevel: level,
    sourceDateEpoch: sourceDateEpoch(env.SOURCE_DATE_EPOCH),
  };
}

/**
 * Whether `registry/repository` is inside one of the allowed prefixes. A prefix matches whole
 * path components: `host/team` allows `host/team` and `host/team/app`, not `host/team-evil`;
 * a trailing `/` allows only what is below it.
 */
export function isAllowedTarget(repository: string, allowed: readonly string[]): boolean {
  const name = repository.toLowerCase();
  return allowed.some((p) => (p.endsWith('/') ? name.startsWith(p) : name === p || name.startsWith(`${p}/`)));
}
