/**
 * Registry authentication per the distribution token spec
 * (https://distribution.github.io/distribution/spec/auth/token/ and …/oauth/):
 * ping `/v2/`, read the challenge, then send Basic credentials directly or exchange them at the
 * Bearer realm for a token scoped to the repositories and actions of the request. Tokens are
 * cached per (registry, scope set) until shortly before `expires_in`; a token covering more
 * actions serves requests needing fewer. A resolved credential lives no longer than the first
 * token made from it, and is resolved again once when the token server refuses it.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import type { Dispatcher } from 'undici';
import { request } from './http.ts';
import { NetworkError, AbortedError, RegistryError, UnauthorizedError, isTemporaryStatus, redactUrl } from '../errors.ts';
import type { Logger } from '../log.ts';
import { challengeScopes, parseWwwAuthenticate, type Challenge } from './challenge.ts';
import { addressKind, isInsecure, mayFollow, privateNetwork, registryNetworks, type Endpoint, type PrivateNetwork } from './endpoint.ts';
import { readBounded } from './body.ts';
import type { CredentialProvider, ResolvedCredential } from './types.ts';

/** Seconds assumed when a token response has no `expires_in` (the spec's default). */
export const DEFAULT_TOKEN_LIFETIME_S = 60;
/**
 * Longest wait for the lookup of a registry's host name (see {@link Authenticator.mayRedirect}):
 * node:dns `lookup` runs on the libuv threadpool and cannot be cancelled, and a resolver that
 * does not answer must not hold a push. Past it the registry is judged public, as on a failure.
 */
export const REGISTRY_LOOKUP_TIMEOUT_MS = 5000;
/** A cached token is dropped this long before it expires, so it does not expire mid-request. */
const EXPIRY_MARGIN_MS = 10_000;
/** Most bytes of a token server's answer read (a JWT and a few fields are a few KiB). */
const MAX_TOKEN_RESPONSE = 1024 * 1024;

export const ANONYMOUS_SOURCE = 'anonymous';

export interface AuthorizationResult {
  /** Value for the Authorization header; undefined for anonymous requests. */
  readonly header?: string;
  /** Where the credentials came from, for messages ("anonymous" when none). */
  readonly source: string;
  /** The credential the header was made from, to forget if the registry refuses it. */
  readonly credential?: CredentialEntry;
}

interface CachedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly scopes: ReadonlyMap<string, ReadonlySet<string>>;
  /** Where the credential it was made from came from, for messages. */
  readonly source: string;
  /** The credential it was made from. */
  readonly credential: CredentialEntry;
}

/**
 * A resolved credential, kept no longer than the first token made from it: providers hand out
 * short-lived secrets (a Google access token lives an hour), and the {@link CredentialProvider}
 * contract promises `resolve` is called again when a token expires or is rejected.
 */
export interface CredentialEntry {
  readonly value: Shared<ResolvedCredential | undefined>;
  expiresAt: number;
}

interface HostState {
  /** undefined: not pinged yet; null: the registry wants no auth. */
  challenge?: Challenge | null;
  ping?: Shared<void>;
  /**
   * The private networks the registry's host name resolves to (see {@link registryNetworks}),
   * looked up the first time a redirect, Location or token realm points at a private address.
   */
  networks?: Shared<ReadonlySet<PrivateNetwork>>;
  credential?: CredentialEntry;
  tokens: CachedToken[];
  /** Token requests in flight, by scope set, so concurrent uploads share one. */
  inflight: Map<string, Shared<CachedToken>>;
}

/**
 * Work that concurrent callers wait for together (a ping, a credential, a token, a lookup). It
 * runs under its own signal, aborted only once every caller waiting for it has aborted; each
 * caller stops waiting when its own signal aborts. Run with the first caller's signal, it failed
 * every other caller (another build sharing the client) with that caller's abort.
 */
class Shared<T> {
  readonly #controller = new AbortController();
  readonly #work: Promise<T>;
  #waiting = 0;

  constructor(work: (signal: AbortSignal) => Promise<T>) {
    this.#work = work(this.#controller.signal);
    this.#work.catch(() => {}); // seen by the callers that wait for it
  }

  /** Every caller gave up and the work is being stopped: a new caller starts it again. */
  get abandoned(): boolean {
    return this.#controller.signal.aborted;
  }

  /** Calls `settled` once the work has succeeded (true) or failed: the owner's bookkeeping, not a wait. */
  observe(settled: (ok: boolean) => void): void {
    this.#work.then(() => settled(true), () => settled(false));
  }

  wait(signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(new AbortedError('aborted', { cause: signal.reason }));
    this.#waiting++;
    if (!signal) return this.#work;
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        reject(new AbortedError('aborted', { cause: signal.reason }));
        if (--this.#waiting === 0) this.#controller.abort(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void this.#work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }
}

/** "repository:a/b:pull,push" → Map { "repository:a/b" → {pull, push} }, merged. */
export function scopeMap(scopes: readonly string[]): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>();
  for (const s of scopes) {
    const last = s.lastIndexOf(':');
    if (last <= 0) continue;
    const key = s.slice(0, last);
    const set = m.get(key) ?? new Set<string>();
    for (const a of s.slice(last + 1).split(',')) if (a) set.add(a);
    m.set(key, set);
  }
  return m;
}

/** Canonical, sorted scope strings with merged actions. */
export function normalizeScopes(scopes: readonly string[]): string[] {
  return [...scopeMap(scopes)].map(([k, actions]) => `${k}:${[...actions].sort().join(',')}`).sort();
}

function covers(have: ReadonlyMap<string, ReadonlySet<string>>, want: ReadonlyMap<string, ReadonlySet<string>>): boolean {
  for (const [k, actions] of want) {
    const got = have.get(k);
    if (!got) return false;
    for (const a of actions) if (!got.has(a)) return false;
  }
  return true;
}

export interface AuthenticatorOptions {
  readonly credentials: CredentialProvider;
  readonly insecureRegistries: readonly string[];
  readonly logger: Logger;
  readonly userAgent: string;
  readonly dispatcher?: Dispatcher | undefined;
  /**
   * Resolves a registry's host name to learn the private networks it may redirect to, when it
   * first redirects to one (see {@link Authenticator.mayRedirect}); without one, no name is
   * resolved and a registry named by DNS may send us to no private address.
   */
  readonly lookup?: Lookup | undefined;
}

/** All addresses of a host name, as node:dns `lookup(name, { all: true })` gives them. */
export type Lookup = (hostname: string) => Promise<ReadonlyArray<{ readonly address: string }>>;

/** node:dns `lookup` with `all`. */
export const defaultLookup: Lookup = (hostname) => dnsLookup(hostname, { all: true });

export class Authenticator {
  readonly #opts: AuthenticatorOptions;
  readonly #hosts = new Map<string, HostState>();
  /** Token requests made, for tests and debugging. */
  tokenRequests = 0;

  constructor(opts: AuthenticatorOptions) {
    this.#opts = opts;
  }

  #state(registry: string): HostState {
    let s = this.#hosts.get(registry);
    if (!s) {
      s = { tokens: [], inflight: new Map() };
      this.#hosts.set(registry, s);
    }
    return s;
  }

  /** The host's credential entry, resolving it again when it has outlived a token made from it. */
  #credentialEntry(registry: string): CredentialEntry {
    const s = this.#state(registry);
    if (s.credential && (s.credential.expiresAt <= Date.now() || s.credential.value.abandoned)) s.credential = undefined;
    if (!s.credential) {
      const entry: CredentialEntry = { value: new Shared((signal) => this.#opts.credentials.resolve(registry, signal)), expiresAt: Infinity };
      // A failed resolve is not cached; the next request asks the provider again.
      entry.value.observe((ok) => {
        if (!ok && s.credential === entry) s.credential = undefined;
      });
      s.credential = entry;
    }
    return s.credential;
  }

  /** Forgets `entry` unless a concurrent request has already replaced it. */
  #dropCredential(registry: string, entry: CredentialEntry): void {
    const s = this.#state(registry);
    if (s.credential === entry) s.credential = undefined;
  }

  async #ping(ep: Endpoint, signal?: AbortSignal): Promise<void> {
    const s = this.#state(ep.registry);
    if (s.challenge !== undefined) return;
    if (!s.ping || s.ping.abandoned) {
      const ping = new Shared((shared) => this.#pingOnce(ep, s, shared));
      ping.observe(() => {
        if (s.ping === ping) s.ping = undefined;
      });
      s.ping = ping;
    }
    await s.ping.wait(signal);
  }

  /**
   * Whether the registry of `ep` may send us to `target` (a redirect, an upload Location, a token
   * realm): {@link mayFollow}, with the private networks the registry's host name resolves to.
   * The name is looked up only when that can change the answer, a private target of a registry
   * named by DNS, and then once per registry (for the client's life), shared by concurrent
   * callers: a push that is never sent to a private address resolves nothing. A lookup that fails
   * or takes longer than {@link REGISTRY_LOOKUP_TIMEOUT_MS} counts as public (the target is
   * refused), and so does every name when no `lookup` was given. Literal addresses are judged as
   * written, forbidden targets (metadata, link-local) are refused before any lookup.
   */
  async mayRedirect(ep: Endpoint, target: URL, signal?: AbortSignal): Promise<boolean> {
    if (mayFollow(ep.registry, target)) return true;
    if (!this.#opts.lookup || privateNetwork(target.hostname) === undefined || addressKind(new URL(ep.origin).hostname) !== undefined) return false;
    const s = this.#state(ep.registry);
    if (!s.networks || s.networks.abandoned) s.networks = new Shared((shared) => this.#resolveNetworks(ep, shared));
    return mayFollow(ep.registry, target, await s.networks.wait(signal));
  }

  async #resolveNetworks(ep: Endpoint, signal: AbortSignal): Promise<ReadonlySet<PrivateNetwork>> {
    const hostname = new URL(ep.origin).hostname;
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(REGISTRY_LOOKUP_TIMEOUT_MS)]);
    try {
      return registryNetworks((await untilAborted(this.#opts.lookup!(hostname), deadline)).map((a) => a.address));
    } catch (err) {
      if (signal.aborted) throw new AbortedError('aborted', { cause: err });
      this.#opts.logger.debug('resolving the registry host failed (judged public)', { registry: ep.registry, error: describe(err) });
      return new Set();
    }
  }

  async #pingOnce(ep: Endpoint, s: HostState, signal: AbortSignal): Promise<void> {
    const url = `${ep.origin}/v2/`;
    const started = Date.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'GET',
        headers: { 'user-agent': this.#opts.userAgent },
        signal,
        ...(this.#opts.dispatcher ? { dispatcher: this.#opts.dispatcher } : {}),
      });
    } catch (err) {
      if (signal.aborted) throw new AbortedError('aborted', { cause: err });
      if (answeredPlainHttp(err)) {
        // Not worth a retry: it will answer in plain HTTP again.
        throw new NetworkError(
          `cannot reach registry ${ep.registry} (GET ${url}): the TLS handshake failed (${PLAIN_HTTP_CODE}): the registry seems to speak plain HTTP, not HTTPS; if so, pass --insecure-registry ${ep.registry} (insecureRegistries in the library)`,
          { cause: err, temporary: false },
        );
      }
      throw new NetworkError(`cannot reach registry ${ep.registry} (GET ${url}): ${describe(err)}`, { cause: err });
    }
    await res.body.dump();
    this.#opts.logger.debug('http', { method: 'GET', url, status: res.statusCode, ms: Date.now() - started });
    if (res.statusCode === 401) {
      s.challenge = pickChallenge(parseWwwAuthenticate(res.headers['www-authenticate'])) ?? null;
    } else if (isTemporaryStatus(res.statusCode)) {
      throw new RegistryError(`registry ${ep.registry} answered GET /v2/ with ${res.statusCode}`, { method: 'GET', url, status: res.statusCode });
    } else {
      // 200, or a registry that does not implement the ping (404, 403 behind some proxies):
      // no challenge yet; a 401 on a real request will bring one.
      s.challenge = null;
    }
  }

  /** The Authorization header for a request needing `scopes` on `ep`. */
  async authorize(ep: Endpoint, scopes: readonly string[], action: string, signal?: AbortSignal): Promise<AuthorizationResult> {
    await this.#ping(ep, signal);
    const s = this.#state(ep.registry);
    const challenge = s.challenge;
    if (!challenge) return { source: ANONYMOUS_SOURCE };
    if (challenge.scheme === 'bearer') {
      const now = Date.now();
      s.tokens = s.tokens.filter((t) => t.expiresAt > now);
      const want = scopeMap(scopes);
      const cached = s.tokens.find((t) => covers(t.scopes, want));
      if (cached) return { header: `Bearer ${cached.token}`, source: cached.source, credential: cached.credential };
    }
    const entry = this.#credentialEntry(ep.registry);
    const resolved = await entry.value.wait(signal);
    const cred = resolved?.credential;
    const source = resolved?.source ?? ANONYMOUS_SOURCE;
    if (challenge.scheme === 'basic') {
      if (cred?.username !== undefined && cred.password !== undefined) {
        this.#assertMaySendCredentials(ep.registry, ep.origin);
        return { header: `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`, source, credential: entry };
      }
      return { source, credential: entry };
    }
    if (challenge.scheme === 'bearer') {
      if (cred?.registryToken) {
        this.#assertMaySendCredentials(ep.registry, ep.origin);
        return { header: `Bearer ${cred.registryToken}`, source, credential: entry };
      }
      const normalized = normalizeScopes(scopes);
      const key = normalized.join(' ');
      let pending = s.inflight.get(key);
      if (!pending || pending.abandoned) {
        const started = new Shared((shared) =>
          this.#tokenWithFreshCredential(ep, challenge, normalized, entry, resolved, action, shared).then((t) => {
            s.tokens.push(t);
            return t;
          }),
        );
        started.observe(() => {
          if (s.inflight.get(key) === started) s.inflight.delete(key);
        });
        s.inflight.set(key, started);
        pending = started;
      }
      const token = await pending.wait(signal);
      return { header: `Bearer ${token.token}`, source: token.source, credential: token.credential };
    }
    return { source };
  }

  /**
   * Fetches a token with the credential of `entry`. When the token server refuses it (401/403),
   * the credential may simply have rotated since it was resolved: resolve again and, if the
   * provider now hands out something else, try once more. The credential entry is kept no
   * longer than the token made from it.
   */
  async #tokenWithFreshCredential(
    ep: Endpoint,
    challenge: Challenge,
    scopes: string[],
    entry: CredentialEntry,
    resolved: ResolvedCredential | undefined,
    action: string,
    signal: AbortSignal,
  ): Promise<CachedToken> {
    let token: Omit<CachedToken, 'credential'>;
    try {
      token = await this.#fetchToken(ep, challenge, scopes, resolved, action, signal);
    } catch (err) {
      if (!(err instanceof UnauthorizedError)) throw err;
      this.#dropCredential(ep.registry, entry);
      entry = this.#credentialEntry(ep.registry);
      const again = await entry.value.wait(signal);
      if (sameCredential(again, resolved)) throw err;
      this.#opts.logger.debug('token server refused the credential; trying the one resolved again', { registry: ep.registry, source: again?.source ?? ANONYMOUS_SOURCE });
      resolved = again;
      token = await this.#fetchToken(ep, challenge, scopes, resolved, action, signal);
    }
    entry.expiresAt = Math.min(entry.expiresAt, token.expiresAt);
    return { ...token, credential: entry };
  }

  /**
   * A request sent with `rejected` was answered 401. Adopt the new challenge and forget what
   * the request was sent with, its token and the credential that made it, and only that:
   * requests refused for the same token at the same time find both gone and share the one
   * new token the first of them asks for (forgetting every token, token request and credential
   * of the host had each of them fetch its own token and resolve the credential again). A
   * challenge from another realm or service voids everything. Returns the scopes to ask for on
   * the one retry (the challenge may name more), or undefined when a retry cannot help.
   */
  onUnauthorized(registry: string, wwwAuthenticate: string | string[] | undefined, scopes: readonly string[], rejected: AuthorizationResult): string[] | undefined {
    const s = this.#state(registry);
    const challenge = pickChallenge(parseWwwAuthenticate(wwwAuthenticate));
    if (!challenge) return undefined;
    if (sameIssuer(s.challenge, challenge)) {
      s.tokens = s.tokens.filter((t) => `Bearer ${t.token}` !== rejected.header);
      if (rejected.credential) this.#dropCredential(registry, rejected.credential);
    } else {
      s.tokens = [];
      s.inflight.clear();
      s.credential = undefined;
    }
    s.challenge = challenge;
    return normalizeScopes([...scopes, ...challengeScopes(challenge)]);
  }

  /**
   * An anonymous token from the Bearer `challenge` of a server a registry redirected us to
   * (registry.k8s.io sends manifest requests to a regional Artifact Registry, which asks public
   * readers for an anonymous token). Never made from the registry's credentials: they are for
   * the registry only. The realm is held to the same rules as the registry's own ({@link mayFollow}
   * against `ep`'s registry). Not cached: it serves the one redirected request.
   */
  async anonymousToken(ep: Endpoint, challenge: Challenge, scopes: string[], action: string, signal?: AbortSignal): Promise<string> {
    return (await this.#fetchToken(ep, challenge, normalizeScopes(scopes), undefined, action, signal)).token;
  }

  /** Credentials go over plain http only to loopback hosts and registries marked insecure. */
  #assertMaySendCredentials(registry: string, url: string): void {
    const u = new URL(url);
    if (u.protocol === 'https:' || isInsecure(u.host, this.#opts.insecureRegistries)) return;
    throw new RegistryError(
      `refusing to send credentials for ${registry} over plain http to ${u.host} (list it in insecureRegistries if that is intended)`,
      { method: 'GET', url: `${u.origin}/` },
    );
  }

  async #fetchToken(
    ep: Endpoint,
    challenge: Challenge,
    scopes: string[],
    resolved: ResolvedCredential | undefined,
    action: string,
    signal?: AbortSignal,
  ): Promise<Omit<CachedToken, 'credential'>> {
    const realmRaw = challenge.params.realm;
    if (!realmRaw) throw new RegistryError(`registry ${ep.registry} sent a Bearer challenge without a realm`, { method: 'GET', url: `${ep.origin}/v2/` });
    let realm: URL;
    try {
      realm = new URL(realmRaw);
    } catch {
      throw new RegistryError(`registry ${ep.registry} sent an invalid token realm`, { method: 'GET', url: `${ep.origin}/v2/` });
    }
    if (!(await this.mayRedirect(ep, realm, signal)) || realm.username || realm.password) {
      throw new RegistryError(`refusing token realm ${redactUrl(realm.toString())} of registry ${ep.registry}: not an allowed token server address`, {
        method: 'GET',
        url: realm.toString(),
      });
    }
    const cred = resolved?.credential;
    const source = resolved?.source ?? ANONYMOUS_SOURCE;
    const sendsSecret = Boolean(cred?.identityToken || (cred?.username !== undefined && cred.password !== undefined));
    if (sendsSecret) this.#assertMaySendCredentials(ep.registry, realm.toString());

    const service = challenge.params.service;
    // An identity token goes as the OAuth2 refresh-token grant (POST); a token server without
    // the POST (404) gets the GET flow instead, the identity token as the Basic password, as the
    // distribution OAuth doc says and ggcr and containerd do (GCR's token server once answered 404).
    const identityToken = cred?.identityToken;
    let oauth = Boolean(identityToken);
    for (;;) {
      const headers: Record<string, string> = { 'user-agent': this.#opts.userAgent, accept: 'application/json' };
      let body: string | undefined;
      const url = new URL(realm);
      const method = oauth ? 'POST' : 'GET';
      if (oauth && identityToken) {
        // OAuth2 refresh-token grant (distribution spec: oauth.md).
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: identityToken, client_id: 'artificer' });
        if (service) form.set('service', service);
        if (scopes.length) form.set('scope', scopes.join(' '));
        body = form.toString();
        headers['content-type'] = 'application/x-www-form-urlencoded';
      } else {
        if (service) url.searchParams.set('service', service);
        for (const sc of scopes) url.searchParams.append('scope', sc);
        const basic = identityToken ? { username: cred?.username ?? '<token>', password: identityToken } : cred;
        if (basic?.username !== undefined && basic.password !== undefined) {
          headers.authorization = `Basic ${Buffer.from(`${basic.username}:${basic.password}`).toString('base64')}`;
        }
      }
      this.tokenRequests++;
      const started = Date.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method,
          headers,
          ...(body !== undefined ? { body } : {}),
          ...(signal ? { signal } : {}),
          ...(this.#opts.dispatcher ? { dispatcher: this.#opts.dispatcher } : {}),
        });
      } catch (err) {
        if (signal?.aborted) throw new AbortedError('aborted', { cause: err });
        throw new NetworkError(`cannot reach token server for ${ep.registry} (${method} ${redactUrl(url.toString())}): ${describe(err)}`, { cause: err });
      }
      this.#opts.logger.debug('http', { method, url: redactUrl(url.toString()), status: res.statusCode, ms: Date.now() - started, scopes });
      const details = { method, url: url.toString(), status: res.statusCode };
      if (res.statusCode !== 200) {
        await res.body.dump(); // its explanation is not used (dump reads at most 128 KiB of it)
        if (oauth && res.statusCode === 404) {
          this.#opts.logger.debug('token server has no OAuth2 POST (404); using the GET flow', { registry: ep.registry });
          oauth = false;
          continue;
        }
        if (res.statusCode === 401 || res.statusCode === 403) throw new UnauthorizedError(ep.registry, source, action, details);
        throw new RegistryError(`token server for ${ep.registry} answered ${res.statusCode}`, details);
      }
      return this.#readToken(ep, res, details, scopes, source);
    }
  }

  /** The token in a token server's 200 answer. */
  async #readToken(
    ep: Endpoint,
    res: Dispatcher.ResponseData,
    details: { method: string; url: string; status: number },
    scopes: string[],
    source: string,
  ): Promise<Omit<CachedToken, 'credential'>> {
    // A token answer is a few KiB of JSON; a server sending more is not a token server.
    const text = (await readBounded(res.body, MAX_TOKEN_RESPONSE, () => new RegistryError(`token server for ${ep.registry} answered with more than ${MAX_TOKEN_RESPONSE} bytes`, details))).toString('utf8');
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      throw new RegistryError(`token server for ${ep.registry} answered with something that is not JSON`, details);
    }
    const token = typeof parsed.token === 'string' && parsed.token ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : '';
    if (!token) throw new RegistryError(`token server for ${ep.registry} answered without a token`, details);
    const lifetime = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const lifetimeMs = lifetime * 1000;
    return {
      token,
      expiresAt: Date.now() + Math.max(lifetimeMs / 2, lifetimeMs - EXPIRY_MARGIN_MS),
      scopes: scopeMap(scopes),
      source,
    };
  }
}

/** Whether two resolutions carry the same secret (then trying again cannot help). */
function sameCredential(a: ResolvedCredential | undefined, b: ResolvedCredential | undefined): boolean {
  const x = a?.credential;
  const y = b?.credential;
  return (
    x?.username === y?.username && x?.password === y?.password && x?.identityToken === y?.identityToken && x?.registryToken === y?.registryToken
  );
}

/** Whether credentials and tokens made for challenge `a` still serve under `b`. */
function sameIssuer(a: Challenge | null | undefined, b: Challenge): boolean {
  return a?.scheme === b.scheme && a.params.realm === b.params.realm && a.params.service === b.params.service;
}

/** Prefer Bearer over Basic when a registry offers both. */
function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
}

const PLAIN_HTTP_CODE = 'ERR_SSL_WRONG_VERSION_NUMBER';

/**
 * Whether a TLS handshake failed because the server answered in plain text: OpenSSL reads the
 * "HTTP/1.1 400" a plain-HTTP server sends back as a TLS record of an unknown version. Docker
 * reports the same case as "http: server gave HTTP response to HTTPS client".
 */
function answeredPlainHttp(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === PLAIN_HTTP_CODE;
}

/** `work`, or a rejection with the signal's reason once `signal` aborts (the work itself runs on). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export function describe(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const msg = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

