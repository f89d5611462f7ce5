/**
 * fake-gcs-server (github.com/fsouza/fake-gcs-server, installed by scripts/setup.sh) as Cloud
 * Storage on loopback, in memory. Clients reach it through `STORAGE_EMULATOR_HOST=<url>`, which
 * @google-cloud/storage, the function under test and `gcloud storage` (via
 * api_endpoint_overrides/storage, see {@link gcloudStorageEnv}) all honour.
 *
 * What it does and does not do (v1.55.1): generations behave like Cloud Storage's (a new one per
 * upload, `generation=` reads). Metadata PATCHes do not: both `ifGenerationMatch` and
 * `ifMetagenerationMatch` are ignored and the metageneration is never bumped (checked by hand on
 * 2026-11-28). Tests of a lost precondition race inject Cloud Storage's 412 with the fault proxy
 * in front of it (test/integration/function.test.ts).
 */
import { Storage } from '@google-cloud/storage';
import { freePort } from './ports.ts';
import { httpAnswers, startService } from './service.ts';
import { tool } from './tools.ts';

export interface RunningGcs {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT": the value for STORAGE_EMULATOR_HOST. */
  url: string;
  /** Its log, in a temp dir that `stop()` removes. */
  logFile: string;
  /** A client talking to this server (no credentials: the emulator needs none). */
  storage(): Storage;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startGcs(): Promise<RunningGcs> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;
  const service = await startService({
    name: 'fake-gcs-server',
    command: tool('fake-gcs-server'),
    args: ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory', '-public-host', host, '-external-url', url, '-log-level', 'warn'],
    ready: () => httpAnswers(`${url}/storage/v1/b`, (status) => status >= 200 && status < 300),
  });
  const storage = (): Storage => new Storage({ apiEndpoint: url, projectId: 'test-project', useAuthWithCustomEndpoint: false });
  return {
    host,
    url,
    logFile: service.logFile,
    storage,
    async createBucket(name) {
      await storage().createBucket(name);
    },
    stop: service.stop,
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
