/**
 * A token server per the distribution token-auth spec
 * (https://distribution.github.io/distribution/spec/auth/token/), for tests: a node:http server
 * that issues RS256 JWTs the real docker-registry verifies against the self-signed certificate
 * given as its `rootcertbundle`.
 *
 * distribution 2.8 finds the signing key from the JWT header either through `x5c` (a chain that
 * must verify against the root bundle) or through `kid`, matched against the libtrust key IDs of
 * the public keys in the root bundle (registry/auth/token/token.go, `verifySigningKey`). We use
 * `kid`: it needs no chain and is deterministic.
 */
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface AuthorizeRequest {
  /** From Basic auth (GET) or the `password` grant (POST); undefined for anonymous requests. */
  readonly username?: string;
  readonly password?: string;
  /** From the `refresh_token` grant (POST), i.e. a docker `identitytoken`. */
  readonly refreshToken?: string;
  /** Requested scopes as sent, e.g. `repository:foo/bar:pull,push`. */
  readonly scopes: string[];
}

/**
 * Decides what a request gets: the scopes granted (same syntax as requested, possibly with fewer
 * actions or fewer scopes), or `false` to refuse with 401 (bad credentials).
 */
export type Authorize = (req: AuthorizeRequest) => string[] | false;

export interface TokenServerOptions {
  readonly service?: string;
  readonly issuer?: string;
  /** username → password accepted by the default `authorize`. */
  readonly users?: Record<string, string>;
  /** refresh token → username accepted by the default `authorize` for the refresh_token grant. */
  readonly refreshTokens?: Record<string, string>;
  readonly authorize?: Authorize;
  /** Lifetime written to `exp` and `expires_in`; default 300 s. */
  readonly expiresIn?: number;
  /** false: POST (the OAuth2 flow) answers 404, as GCR's token server did (containerd's authorizer.go notes it). Default true. */
  readonly oauthPost?: boolean;
}

export interface TokenRequestRecord {
  readonly method: string;
  readonly username?: string;
  readonly grantType?: string;
  readonly scopes: string[];
  /** Granted scopes, or undefined when refused. */
  readonly granted?: string[];
}

export interface RunningTokenServer {
  /** The realm URL to configure in the registry: `http://127.0.0.1:PORT/token`. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM certificate path for the registry's `auth.token.rootcertbundle`. */
  readonly rootCertBundle: string;
  /** Every request to the token endpoint, in order. */
  readonly requests: TokenRequestRecord[];
  /** Number of tokens issued (requests that were not refused). */
  tokensIssued(): number;
  stop(): Promise<void>;
}

/** `repository:foo/bar:pull,push` → its parts; the name may itself contain colons. */
export function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

/** libtrust key ID: base32 of the first 240 bits of sha256(SPKI DER), in 4-character groups joined by ':'. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const hash = createHash('sha256').update(der).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of hash) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  return out.match(/.{4}/g)!.join(':');
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  if (!header?.toLowerCase().startsWith('basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<RunningTokenServer> {
  const dir = await mkdtemp(join(tmpdir(), 'artificer-token-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await execFileP('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath,
    '-days', '2', '-subj', '/CN=artificer-test-token-issuer',
  ]);
  const privateKey = createPrivateKey(await readFile(keyPath));
  const kid = libtrustKeyId(createPublicKey(privateKey));
  const service = opts.service ?? 'artificer-test-registry';
  const issuer = opts.issuer ?? 'artificer-test-issuer';
  const expiresIn = opts.expiresIn ?? 300;
  const users = opts.users ?? {};
  const refreshTokens = opts.refreshTokens ?? {};
  const authorize: Authorize =
    opts.authorize ??
    ((r) => {
      if (r.refreshToken !== undefined) return r.refreshToken in refreshTokens ? r.scopes : false;
      if (r.username === undefined) return [];
      return Object.hasOwn(users, r.username) && users[r.username] === r.password ? r.scopes : false;
    });
  const requests: TokenRequestRecord[] = [];
  let issued = 0;

  /**
   * The token's audience is the service the client asked for, as Docker Hub's and docker_auth's
   * token servers write it: a client that leaves `service` out gets a token the registry refuses.
   */
  function issue(subject: string, audience: string, granted: string[]): string {
    const now = Math.floor(Date.now() / 1000);
    const access = granted.flatMap((s) => {
      const p = parseScope(s);
      return p ? [{ type: p.type, name: p.name, actions: p.actions }] : [];
    });
    const header = { typ: 'JWT', alg: 'RS256', kid };
    const claims = { iss: issuer, sub: subject, aud: audience, exp: now + expiresIn, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign('sha256', Buffer.from(input), privateKey))}`;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/token' || (req.method === 'POST' && opts.oauthPost === false)) {
      if (url.pathname === '/token') requests.push({ method: 'POST', scopes: [] });
      res.writeHead(404).end();
      return;
    }
    let username: string | undefined;
    let password: string | undefined;
    let refreshToken: string | undefined;
    let grantType: string | undefined;
    let scopes: string[];
    let audience: string;
    if (req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      audience = form.get('service') ?? '';
      grantType = form.get('grant_type') ?? undefined;
      scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      if (grantType === 'password') {
        username = form.get('username') ?? undefined;
        password = form.get('password') ?? undefined;
      } else if (grantType === 'refresh_token') {
        refreshToken = form.get('refresh_token') ?? undefined;
      } else {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unsupported_grant_type' }));
        return;
      }
    } else {
      audience = url.searchParams.get('service') ?? '';
      const basic = parseBasic(req.headers.authorization);
      username = basic?.username;
      password = basic?.password;
      scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    }
    const granted = authorize({
      ...(username !== undefined ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(refreshToken !== undefined ? { refreshToken } : {}),
      scopes,
    });
    requests.push({
      method: req.method ?? 'GET',
      ...(username !== undefined ? { username } : {}),
      ...(grantType !== undefined ? { grantType } : {}),
      scopes,
      ...(granted !== false ? { granted } : {}),
    });
    if (granted === false) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'invalid credentials' }));
      return;
    }
    issued++;
    const token = issue(username ?? (refreshToken !== undefined ? (refreshTokens[refreshToken] ?? 'refresh') : ''), audience, granted);
    const body: Record<string, unknown> = { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500).end(String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('token server: no address');
  return {
    realm: `http://127.0.0.1:${addr.port}/token`,
    service,
    issuer,
    rootCertBundle: certPath,
    requests,
    tokensIssued: () => issued,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
