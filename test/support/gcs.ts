/**
 * fake-gcs-server (github.com/fsouza/fake-gcs-server, installed by scripts/setup.sh) as Cloud
 * Storage on loopback, in memory. Clients reach it through `STORAGE_EMULATOR_HOST=<url>`, which
 * @google-cloud/storage, the function under test and `gcloud storage` (via
 * api_endpoint_overrides/storage, see {@link gcloudStorageEnv}) all honour.
 *
 * What it does and does not do (v1.55.1, checked by test/integration/gcs-emulator.test.ts):
 * generations (a new one per upload, `generation=` reads, `ifGenerationMatch`) and metadata
 * patches with `ifMetagenerationMatch` behave like Cloud Storage.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Storage } from '@google-cloud/storage';
import { freePort } from './ports.ts';
import { tool } from './tools.ts';

export interface RunningGcs {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT": the value for STORAGE_EMULATOR_HOST. */
  url: string;
  logFile: string;
  /** A client talking to this server (no credentials: the emulator needs none). */
  storage(): Storage;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let hooked = false;

export async function startGcs(): Promise<RunningGcs> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const logFile = join(tmpdir(), `artificer-fake-gcs-${port}.log`);
  const fd = openSync(logFile, 'w');
  const child = spawn(
    tool('fake-gcs-server'),
    ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory', '-public-host', host, '-external-url', url, '-log-level', 'warn'],
    { stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  live.add(child);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`fake-gcs-server exited: ${await readFile(logFile, 'utf8')}`);
    try {
      const res = await fetch(`${url}/storage/v1/b`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`fake-gcs-server did not answer on ${url}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const storage = (): Storage => new Storage({ apiEndpoint: url, projectId: 'test-project', useAuthWithCustomEndpoint: false });
  return {
    host,
    url,
    logFile,
    storage,
    async createBucket(name) {
      await storage().createBucket(name);
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
      live.delete(child);
    },
  };
}

/**
 * Environment for the preinstalled `gcloud storage` pointed at the emulator: a throw-away config
 * dir, no credentials needed (auth/disable_credentials), the JSON API endpoint overridden.
 */
export function gcloudStorageEnv(gcsUrl: string, configDir: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CLOUDSDK_CONFIG: configDir,
    CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
    CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: 'true',
    CLOUDSDK_AUTH_DISABLE_CREDENTIALS: 'true',
    CLOUDSDK_CORE_PROJECT: 'test-project',
    CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE: `${gcsUrl}/storage/v1/`,
    CLOUDSDK_STORAGE_USE_GRPC_IF_AVAILABLE: 'false',
  };
}
