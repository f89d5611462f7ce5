/**
 * Starts the real CNCF distribution registry (/usr/bin/docker-registry, 2.8) on loopback for a
 * test, with no auth, htpasswd basic auth, or token auth backed by {@link startTokenServer}.
 * Call `stop()` in `after()`; a registry still alive when the process exits is killed too
 * (see service.ts).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';
import { httpAnswers, startService } from './service.ts';
import { startTokenServer, type Authorize, type RunningTokenServer } from './token-server.ts';

export type { RunningTokenServer, Authorize, AuthorizeRequest } from './token-server.ts';

const execFileP = promisify(execFile);
const REGISTRY_BIN = '/usr/bin/docker-registry';

export type RegistryAuth = 'none' | 'basic' | 'token';

export interface StartRegistryOptions {
  auth?: RegistryAuth;
  /** username → password. Default for basic/token: one random user. */
  users?: Record<string, string>;
  /** Token auth only: which requested scopes to grant (see token-server.ts). */
  authorize?: Authorize;
  /** Token auth only: refresh token (docker identitytoken) → username. */
  refreshTokens?: Record<string, string>;
  /** Token auth only: token lifetime in seconds (default 300). */
  tokenExpiresIn?: number;
  /** Token auth only: false makes the token server answer the OAuth2 POST with 404. */
  tokenOAuthPost?: boolean;
}

export interface RunningRegistry {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  auth: RegistryAuth;
  /** The first configured user, for basic/token. */
  username?: string;
  password?: string;
  tokenServer?: RunningTokenServer;
  dataDir: string;
  /** Where the registry's own log goes (read it when a test fails). */
  logFile: string;
  /** The registry's process id (tests check it is gone after stop). */
  pid: number;
  stop(): Promise<void>;
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const auth = opts.auth ?? 'none';
  const dir = await mkdtemp(join(tmpdir(), 'artificer-registry-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'registry.log');
  const users = opts.users ?? (auth === 'none' ? {} : { testuser: randomBytes(9).toString('base64url') });
  const [username, password] = Object.entries(users)[0] ?? [];
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;

  let tokenServer: RunningTokenServer | undefined;
  let authConfig: Record<string, unknown> | undefined;
  if (auth === 'basic') {
    const lines: string[] = [];
    for (const [u, p] of Object.entries(users)) {
      const { stdout } = await execFileP('htpasswd', ['-Bbn', u, p]);
      lines.push(stdout.trim());
    }
    const htpasswdPath = join(dir, 'htpasswd');
    await writeFile(htpasswdPath, lines.join('\n') + '\n');
    authConfig = { htpasswd: { realm: 'artificer-test', path: htpasswdPath } };
  } else if (auth === 'token') {
    tokenServer = await startTokenServer({
      users,
      ...(opts.authorize ? { authorize: opts.authorize } : {}),
      ...(opts.refreshTokens ? { refreshTokens: opts.refreshTokens } : {}),
      ...(opts.tokenExpiresIn !== undefined ? { expiresIn: opts.tokenExpiresIn } : {}),
      ...(opts.tokenOAuthPost !== undefined ? { oauthPost: opts.tokenOAuthPost } : {}),
    });
    authConfig = {
      token: {
        realm: tokenServer.realm,
        service: tokenServer.service,
        issuer: tokenServer.issuer,
        rootcertbundle: tokenServer.rootCertBundle,
      },
    };
  }

  // JSON is valid YAML, and the registry reads its config with a YAML parser.
  const config = {
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: dataDir }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: host, secret: randomBytes(16).toString('hex') },
    ...(authConfig ? { auth: authConfig } : {}),
  };
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2));

  const service = await startService({
    name: 'docker-registry',
    command: REGISTRY_BIN,
    args: ['serve', configPath],
    logFile,
    ready: () => httpAnswers(`${url}/v2/`, (status) => status === 200 || status === 401),
    afterStop: async () => {
      await tokenServer?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  });

  return {
    host,
    url,
    auth,
    ...(username !== undefined ? { username, password } : {}),
    ...(tokenServer ? { tokenServer } : {}),
    dataDir,
    logFile,
    pid: service.pid,
    stop: service.stop,
  };
}
