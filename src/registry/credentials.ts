/**
 * Credential providers: docker's config.json chain (auths, credHelpers, credsStore), a chain
 * combinator and the anonymous provider. Sources are named in messages; secrets never are.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AbortedError, ArtificerError } from '../errors.ts';
import type { Credential, CredentialProvider, ResolvedCredential } from './types.ts';

/** Never has credentials: every request is anonymous. */
export const anonymous: CredentialProvider = {
  async resolve() {
    return undefined;
  },
};

/** The first provider that has something for the registry wins. */
export function chainCredentials(...providers: CredentialProvider[]): CredentialProvider {
  return {
    async resolve(registry, signal) {
      for (const p of providers) {
        const found = await p.resolve(registry, signal);
        if (found) return found;
      }
      return undefined;
    },
  };
}

/** A fixed credential for one registry host (tests, flags). */
export function staticCredentials(registry: string, credential: Credential, source = 'static credentials'): CredentialProvider {
  return {
    async resolve(r) {
      return r === registry ? { credential, source } : undefined;
    },
  };
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

const DOCKER_HUB_ALIASES = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];
const DOCKER_HUB_LEGACY_KEY = 'https://index.docker.io/v1/';

/** The keys under which docker may have stored credentials for `registry`, most specific first. */
function candidateKeys(registry: string): string[] {
  if (DOCKER_HUB_ALIASES.includes(registry)) return [DOCKER_HUB_LEGACY_KEY, ...DOCKER_HUB_ALIASES];
  return [registry];
}

/** `auths` keys may be bare hosts or URLs (`https://host/v1/`): compare by host[:port]. */
function keyHost(key: string): string {
  const m = /^(?:[a-z][a-z0-9+.-]*:\/\/)?([^/]+)/i.exec(key);
  return (m?.[1] ?? key).toLowerCase();
}

function findEntry<T>(map: Record<string, T> | undefined, registry: string): T | undefined {
  if (!map) return undefined;
  for (const candidate of candidateKeys(registry)) {
    if (Object.hasOwn(map, candidate)) return map[candidate];
  }
  const hosts = candidateKeys(registry).map(keyHost);
  for (const [key, value] of Object.entries(map)) {
    if (hosts.includes(keyHost(key))) return value;
  }
  return undefined;
}

/** The server URL to give a credential helper: docker uses the legacy index URL for Docker Hub. */
function helperServer(registry: string): string {
  return DOCKER_HUB_ALIASES.includes(registry) ? DOCKER_HUB_LEGACY_KEY : registry;
}

/**
 * Runs `docker-credential-NAME get` with the server on stdin (the docker-credential-helpers
 * protocol). "credentials not found" → undefined; other failures throw, without the output
 * (which may contain a secret) beyond its first line of stderr.
 */
async function runHelper(name: string, server: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<Credential | undefined> {
  const bin = `docker-credential-${name}`;
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(bin, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => {
      if (signal?.aborted) reject(new AbortedError('aborted', { cause: signal.reason }));
      else reject(new ArtificerError('ARTIFICER_UNAUTHORIZED', `cannot run credential helper ${bin}: ${(e as NodeJS.ErrnoException).code ?? e.message}`, { cause: e }));
    });
    child.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
    child.stdin.on('error', () => {});
    child.stdin.end(server);
  });
  const combined = `${stdout}\n${stderr}`;
  if (code !== 0) {
    if (/credentials not found/i.test(combined)) return undefined;
    const firstLine = stderr.trim().split('\n')[0]?.slice(0, 200) ?? '';
    throw new ArtificerError('ARTIFICER_UNAUTHORIZED', `credential helper ${bin} failed for ${server} (exit ${code})${firstLine ? `: ${firstLine}` : ''}`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    throw new ArtificerError('ARTIFICER_UNAUTHORIZED', `credential helper ${bin} printed something that is not JSON for ${server}`);
  }
  const username = typeof parsed.Username === 'string' ? parsed.Username : '';
  const secret = typeof parsed.Secret === 'string' ? parsed.Secret : '';
  if (!secret) return undefined;
  if (username === '<token>') return { identityToken: secret };
  return { username, password: secret };
}

function fromAuthEntry(entry: NonNullable<DockerConfig['auths']>[string]): Credential | undefined {
  if (entry.identitytoken) return { identityToken: entry.identitytoken, ...(entry.username ? { username: entry.username } : {}) };
  if (entry.registrytoken) return { registryToken: entry.registrytoken };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/**
 * A credential helper's name as config.json gives it, checked: `docker-credential-NAME` is looked
 * up on PATH only when it holds no "/" (spawn runs a name with one as a path from the current
 * directory, so `"credsStore": "x/../../tool"` ran a file of whatever checkout artificer runs in,
 * once a `docker-credential-x` directory is there). Helpers are named by their binary's suffix:
 * `desktop`, `osxkeychain`, `ecr-login`, `gcloud`.
 */
function helperName(value: unknown, path: string): string {
  if (typeof value === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(value)) return value;
  const shown = (typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)).slice(0, 100).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  throw new ArtificerError(
    'ARTIFICER_UNAUTHORIZED',
    `docker config ${path}: credential helper "${shown}" is not a helper name (letters, digits, ".", "_" and "-": docker-credential-NAME is looked up on PATH)`,
  );
}

/** Where docker keeps its config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || join(env.HOME || homedir(), '.docker');
  return join(dir, 'config.json');
}

/**
 * docker's credential lookup, in docker's order: `credHelpers[host]`, then `credsStore`, then
 * `auths[host]` (whose keys may be URLs; Docker Hub is `https://index.docker.io/v1/`).
 * A missing config file means "no credentials". The file is re-read on every call, so a
 * `docker login` in between is seen.
 */
export function dockerConfigCredentials(opts: { env?: NodeJS.ProcessEnv } = {}): CredentialProvider {
  const env = opts.env ?? process.env;
  const path = dockerConfigPath(env);
  return {
    async resolve(registry, signal): Promise<ResolvedCredential | undefined> {
      let config: DockerConfig;
      try {
        config = JSON.parse(await readFile(path, 'utf8')) as DockerConfig;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        if (err instanceof SyntaxError) {
          // Not the cause (-vv prints it): V8 quotes the text around the mistake (`…"auth": dXNlcjpzdX"…`),
          // and the text of this file is credentials. Where the mistake is, it does not quote.
          const where = /at position \d+(?: \(line \d+ column \d+\))?/.exec(err.message)?.[0];
          throw new ArtificerError('ARTIFICER_UNAUTHORIZED', `cannot read docker config ${path}: invalid JSON${where ? ` ${where}` : ''}`);
        }
        throw new ArtificerError('ARTIFICER_UNAUTHORIZED', `cannot read docker config ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
      }
      const found = findEntry(config.credHelpers, registry);
      if (found) {
        const helper = helperName(found, path);
        const c = await runHelper(helper, helperServer(registry), env, signal);
        return c ? { credential: c, source: `credential helper docker-credential-${helper}` } : undefined;
      }
      if (config.credsStore) {
        const store = helperName(config.credsStore, path);
        const c = await runHelper(store, helperServer(registry), env, signal);
        if (c) return { credential: c, source: `credential helper docker-credential-${store}` };
      }
      const entry = findEntry(config.auths, registry);
      const c = entry ? fromAuthEntry(entry) : undefined;
      return c ? { credential: c, source: `docker config ${path}` } : undefined;
    },
  };
}
