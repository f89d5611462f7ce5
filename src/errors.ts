/**
 * One error hierarchy for the whole library. Every error carries a stable `code`
 * (in the style of undici's `UND_ERR_*`) so callers branch on codes, never on messages,
 * and a `temporary` flag: the CLI ignores it, the Cloud Function uses it to decide
 * between "record a failure" (user mistake) and "throw so Eventarc retries".
 *
 * Messages are sentences a user can act on. They never contain credentials: anything
 * that may hold a URL goes through {@link redactUrl} first.
 */

export type ErrorCode =
  | 'ARTIFICER_USAGE'
  | 'ARTIFICER_INVALID_REFERENCE'
  | 'ARTIFICER_INVALID_SPEC'
  | 'ARTIFICER_SOURCE'
  | 'ARTIFICER_OUTPUT'
  | 'ARTIFICER_MANIFEST_UNKNOWN'
  | 'ARTIFICER_PLATFORM_MISMATCH'
  | 'ARTIFICER_UNAUTHORIZED'
  | 'ARTIFICER_DENIED'
  | 'ARTIFICER_REGISTRY'
  | 'ARTIFICER_NETWORK'
  | 'ARTIFICER_DIGEST_MISMATCH'
  | 'ARTIFICER_UNSUPPORTED'
  | 'ARTIFICER_TARGET_NOT_ALLOWED'
  | 'ARTIFICER_ABORTED'
  | 'ARTIFICER_TAGS_INCOMPLETE';

export interface ArtificerErrorOptions {
  cause?: unknown;
  /** True when the same request may succeed if tried again later (5xx, 429, resets). */
  temporary?: boolean;
}

export class ArtificerError extends Error {
  readonly code: ErrorCode;
  readonly temporary: boolean;

  constructor(code: ErrorCode, message: string, options: ArtificerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.temporary = options.temporary ?? false;
  }
}

/** A flag, an argument or an environment variable the user gave is malformed. */
export class UsageError extends ArtificerError {
  constructor(message: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_USAGE', message, options);
  }
}

/** An image reference does not follow the docker reference grammar. */
export class InvalidReferenceError extends ArtificerError {
  readonly reference: string;
  constructor(reference: string, reason: string) {
    super('ARTIFICER_INVALID_REFERENCE', `invalid image reference "${reference}": ${reason}`);
    this.reference = reference;
  }
}

/** A build spec (JSON) fails validation; `path` is a JSON-pointer-like location. */
export class InvalidSpecError extends ArtificerError {
  readonly path: string;
  constructor(path: string, message: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_INVALID_SPEC', path ? `spec ${path}: ${message}` : `spec: ${message}`, options);
    this.path = path;
  }
}

/** A file to add cannot be read or is of a kind an image layer must not contain. */
export class SourceError extends ArtificerError {
  readonly file: string;
  constructor(file: string, message: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_SOURCE', `${file}: ${message}`, options);
    this.file = file;
  }
}

/** An output on disk (oci:DIR, tarball:FILE, --digest-file) cannot be written. */
export class OutputError extends ArtificerError {
  readonly path: string;
  constructor(path: string, message: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_OUTPUT', `cannot write ${path}: ${message}`, options);
    this.path = path;
  }
}

/**
 * What a failed file-system call on an input means, in words a user reads (the errno code is
 * kept in the error's cause): one vocabulary for every source that reads files.
 */
export function describeFsError(err: unknown): string {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOTDIR':
      return 'a component of the path is not a directory';
    case 'EISDIR':
      return 'is a directory';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}

/** Turns a Node file-system error into an {@link OutputError}; anything else passes through. */
export function asOutputError(path: string, err: unknown): unknown {
  if (err instanceof ArtificerError || !(err instanceof Error)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code !== 'string' || !/^E[A-Z]+$/.test(code)) return err;
  const reasons: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOENT: 'no such file or directory',
    ENOTDIR: 'a parent is not a directory',
    EISDIR: 'is a directory',
    ENOSPC: 'no space left on device',
    EROFS: 'read-only file system',
    EEXIST: 'already exists',
  };
  return new OutputError(path, reasons[code] ?? code, { cause: err });
}

/** The base image (or a tag/digest of it) does not exist in its registry. */
export class ManifestUnknownError extends ArtificerError {
  readonly reference: string;
  constructor(reference: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_MANIFEST_UNKNOWN', `image ${reference} not found in its registry`, options);
    this.reference = reference;
  }
}

/** How many of a base's platforms a {@link PlatformMismatchError} message names. */
const MAX_LISTED_PLATFORMS = 20;
/** How much of one platform's name it shows. */
const MAX_PLATFORM_CHARS = 64;

/**
 * A platform name as the base's registry wrote it, fit for a message: control characters escaped
 * (it reaches a terminal, and the record), at most {@link MAX_PLATFORM_CHARS} characters.
 */
function shownPlatform(p: string): string {
  const head = p.length > MAX_PLATFORM_CHARS ? `${p.slice(0, MAX_PLATFORM_CHARS)}…` : p;
  return head.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * The requested platform is not in the base image's index. The message names the first
 * {@link MAX_LISTED_PLATFORMS} platforms the index has (an index may list thousands: one log
 * line of hundreds of KiB is past Cloud Logging's 256 KB an entry), each as {@link shownPlatform}
 * shows it; `available` keeps them all, as the registry wrote them.
 */
export class PlatformMismatchError extends ArtificerError {
  readonly wanted: string;
  readonly available: readonly string[];
  constructor(reference: string, wanted: string, available: readonly string[]) {
    const listed = available.slice(0, MAX_LISTED_PLATFORMS).map(shownPlatform).join(', ');
    const more = available.length > MAX_LISTED_PLATFORMS ? ` and ${available.length - MAX_LISTED_PLATFORMS} more` : '';
    super('ARTIFICER_PLATFORM_MISMATCH', `base image ${reference} has no ${wanted} variant; available: ${available.length ? `${listed}${more}` : '(none)'}`);
    this.wanted = wanted;
    this.available = available;
  }
}

/** Details of a failed registry request, with a redacted URL and the parsed error body. */
export interface RegistryErrorDetails {
  method: string;
  url: string;
  status?: number;
  /** The registry's `errors: [{code, message}]` body, when it sent one. */
  errors?: ReadonlyArray<{ code: string; message?: string; detail?: unknown }>;
}

const MAX_SUMMARY = 300;

/**
 * The registry's own explanation, "CODE: message; CODE2: message", for a message: control
 * characters dropped (the text is the registry's, and ends up on a terminal), URLs in it
 * redacted, at most 300 characters. Empty when the registry sent no `errors` body.
 */
export function registryErrorSummary(errors: RegistryErrorDetails['errors']): string {
  if (!errors?.length) return '';
  const text = errors
    .map((e) => `${e.code}${e.message ? `: ${e.message}` : ''}`)
    .join('; ')
    .replace(/[\u0000-\u001f\u007f-\u009f\s]+/g, ' ')
    .replace(/\bhttps?:\/\/[^\s"'<>]+/gi, (u) => redactUrl(u))
    .trim();
  return text.length > MAX_SUMMARY ? `${text.slice(0, MAX_SUMMARY - 1)}…` : text;
}

/** "; the registry says: …" when it explained itself, else nothing. */
function registrySays(details: RegistryErrorDetails): string {
  const summary = registryErrorSummary(details.errors);
  return summary ? `; the registry says: ${summary}` : '';
}

/** A registry answered with an error status, or an unexpected response. */
export class RegistryError extends ArtificerError {
  readonly method: string;
  readonly url: string;
  readonly status: number | undefined;
  readonly errors: ReadonlyArray<{ code: string; message?: string; detail?: unknown }>;

  constructor(message: string, details: RegistryErrorDetails, options: ArtificerErrorOptions & { code?: ErrorCode } = {}) {
    const status = details.status;
    super(options.code ?? 'ARTIFICER_REGISTRY', message, {
      ...options,
      temporary: options.temporary ?? (status !== undefined && isTemporaryStatus(status)),
    });
    this.method = details.method;
    this.url = redactUrl(details.url);
    this.status = status;
    this.errors = details.errors ?? [];
  }
}

/**
 * 401: no credentials, or the registry rejected the ones tried. The message names the registry
 * and the credential source tried ("docker config", "credential helper docker-credential-x",
 * "google application default credentials", "anonymous"), never the secret.
 */
export class UnauthorizedError extends RegistryError {
  readonly registry: string;
  readonly credentialSource: string;
  constructor(registry: string, credentialSource: string, action: string, details: RegistryErrorDetails) {
    super(`unauthorized to ${action} on ${registry} (credentials tried: ${credentialSource})${registrySays(details)}`, details, {
      code: 'ARTIFICER_UNAUTHORIZED',
      temporary: false,
    });
    this.registry = registry;
    this.credentialSource = credentialSource;
  }
}

/**
 * Authenticated, but not allowed: a 403, or a 401 `insufficient_scope` after the token server
 * accepted the credential and granted fewer actions than asked (pull but not push).
 */
export class DeniedError extends RegistryError {
  readonly registry: string;
  readonly credentialSource: string;
  constructor(registry: string, credentialSource: string, action: string, details: RegistryErrorDetails) {
    super(`denied: not allowed to ${action} on ${registry} (credentials used: ${credentialSource})${registrySays(details)}`, details, {
      code: 'ARTIFICER_DENIED',
      temporary: false,
    });
    this.registry = registry;
    this.credentialSource = credentialSource;
  }
}

/**
 * Blob storage a registry redirected to (S3, GCS, Docker Hub's Cloudflare) refused the signed
 * URL with 401/403. Registry credentials never go there, so this is no verdict on the user's
 * rights: usually the signature expired or was made for another request, and a fresh redirect
 * works. Temporary, and retried as a whole step.
 */
export class BlobStorageError extends RegistryError {
  readonly storageHost: string;
  constructor(storageHost: string, details: RegistryErrorDetails & { status: number }) {
    super(
      `blob storage ${storageHost} answered ${details.status} to ${details.method} ${redactUrl(details.url)}: it refused the signed URL the registry sent us to (often an expired one), not the registry credentials`,
      details,
      { temporary: true },
    );
    this.storageHost = storageHost;
  }
}

/** The connection failed (refused, reset, timed out, DNS). Always temporary. */
export class NetworkError extends ArtificerError {
  constructor(message: string, options: ArtificerErrorOptions = {}) {
    super('ARTIFICER_NETWORK', message, { ...options, temporary: options.temporary ?? true });
  }
}

/**
 * Content whose digest is not the one expected. `found` says whose content it is: `registry`
 * for what a registry stored or returned, `content` for bytes computed here (a layer or
 * manifest about to be pushed), so the message does not blame a registry for a local mistake.
 */
export class DigestMismatchError extends ArtificerError {
  readonly expected: string;
  readonly actual: string;
  readonly found: 'registry' | 'content';
  constructor(what: string, expected: string, actual: string, found: 'registry' | 'content' = 'registry') {
    super('ARTIFICER_DIGEST_MISMATCH', `${what}: digest mismatch: expected ${expected}, ${found === 'registry' ? 'registry has' : 'content has'} ${actual}`);
    this.expected = expected;
    this.actual = actual;
    this.found = found;
  }
}

/** Something valid but outside what artificer supports (e.g. schema1 manifests). */
export class UnsupportedError extends ArtificerError {
  constructor(message: string, options?: ArtificerErrorOptions) {
    super('ARTIFICER_UNSUPPORTED', message, options);
  }
}

/** The Cloud Function refuses a target outside its allow-list. */
export class TargetNotAllowedError extends ArtificerError {
  readonly target: string;
  constructor(target: string, message = `target ${target} is not in ARTIFICER_ALLOWED_TARGETS`) {
    super('ARTIFICER_TARGET_NOT_ALLOWED', message);
    this.target = target;
  }
}

/** The operation was cancelled through its AbortSignal (Ctrl-C, function timeout). */
export class AbortedError extends ArtificerError {
  constructor(message = 'aborted', options?: ArtificerErrorOptions) {
    super('ARTIFICER_ABORTED', message, options);
  }
}

/**
 * A failure while reading an input, as the {@link SourceError} naming `origin` (a file-system
 * error in the words of {@link describeFsError}); a source error or an abort is kept as it is.
 */
export function asSourceError(err: unknown, origin: string): SourceError | AbortedError {
  if (err instanceof SourceError || err instanceof AbortedError) return err;
  return new SourceError(origin, describeFsError(err), { cause: err });
}

/**
 * Some tags were written, then one failed: the registry now has `tagged` on the new image and
 * the remaining tags where they were. Temporary when the failure was (a retry pushes them all).
 */
export class TagsIncompleteError extends ArtificerError {
  readonly digest: string;
  readonly tagged: readonly string[];
  constructor(digest: string, tagged: readonly string[], cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super('ARTIFICER_TAGS_INCOMPLETE', `only some tags were pushed (${tagged.join(', ')} now point at ${digest}): ${why}`, {
      cause,
      temporary: cause instanceof ArtificerError && cause.temporary,
    });
    this.digest = digest;
    this.tagged = tagged;
  }
}

/** 408, 429 and 5xx mean "try again later"; everything else is final. */
export function isTemporaryStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Query parameters that carry secrets on URLs registries hand out: tokens, upload state, and the
 * signatures of pre-signed storage URLs — S3 (`X-Amz-*`), GCS (`X-Goog-*`), Azure (`sig`),
 * CloudFront (`Policy`, `Signature`, `Key-Pair-Id`) and Docker Hub's Cloudflare blob URLs
 * (`verify=<expiry>-<HMAC>`).
 */
const SECRET_QUERY_KEYS = /^(access_token|token|x-amz-.*|signature|sig|x-goog-.*|password|secret|jwt|_state|verify|policy|key-pair-id)$/i;

/**
 * Removes userinfo and secret-looking query parameters from a URL, for logs and errors.
 * Upload URLs handed out by registries (`Location`) often embed signed state; keep the
 * path so the message still says which request failed.
 *
 * Given the registry's own origin, a URL on any other origin (blob storage the registry
 * redirected to) has every query value redacted: signed storage URLs name their signature in
 * provider-specific ways, and none of their parameters help a reader of the message.
 */
export function redactUrl(raw: string, registryOrigin?: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return raw.replace(/\/\/[^/@\s]*@/, '//REDACTED@');
  }
  if (url.username || url.password) {
    url.username = 'REDACTED';
    url.password = '';
  }
  const foreign = registryOrigin !== undefined && url.origin !== registryOrigin;
  for (const key of [...new Set(url.searchParams.keys())]) {
    if (foreign || SECRET_QUERY_KEYS.test(key)) url.searchParams.set(key, 'REDACTED');
  }
  return url.toString();
}

/** Header names whose values are never logged. */
export const SECRET_HEADERS: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-goog-iam-authorization-token',
]);

/** A copy of `headers` safe to log: secret header values are replaced by `REDACTED`. */
export function redactHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(headers)) out[k] = SECRET_HEADERS.has(k.toLowerCase()) ? 'REDACTED' : v;
  return out;
}

/**
 * Prefixes an error's message with what the caller was doing, keeping its class, code and
 * fields. Returns a copy and leaves `err` alone: one rejection is often awaited by several
 * callers (concurrent requests sharing one token fetch, the push's per-digest de-duplication),
 * and prefixing the shared object made each of them show everyone's context ("checking blob c:
 * checking blob b: checking blob a: unauthorized"). The copy keeps `err`'s own `cause`, so the
 * root cause (a socket error, say) stays one step away.
 */
export function withContext<E extends unknown>(err: E, context: string): E {
  if (!(err instanceof Error) || err.message.startsWith(context)) return err;
  const copy = Object.create(Object.getPrototypeOf(err) as object) as Error;
  for (const key of Reflect.ownKeys(err)) {
    if (key !== 'stack') Object.defineProperty(copy, key, Object.getOwnPropertyDescriptor(err, key)!);
  }
  const message = `${context}: ${err.message}`;
  Object.defineProperty(copy, 'message', { value: message, writable: true, enumerable: false, configurable: true });
  const stack = err.stack?.replace(err.message, message) ?? `${err.name}: ${message}`;
  Object.defineProperty(copy, 'stack', { value: stack, writable: true, enumerable: false, configurable: true });
  return copy as E;
}
