/**
 * A loopback stand-in for the GCE/Cloud Functions metadata server, enough for google-auth-library's
 * real Application Default Credentials path: point `GCE_METADATA_HOST` at `host` and ADC finds
 * "the metadata server", then fetches service-account access tokens from it.
 *
 * Like the real one it requires the `Metadata-Flavor: Google` request header (403 otherwise) and
 * answers with the same header. Tokens are random, recorded, and expire after `expiresIn`
 * seconds, so tests can check that the registry saw exactly a token issued here and that a new
 * one is fetched after expiry.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MetadataServerOptions {
  /** Lifetime of each access token in seconds (default 3600). */
  expiresIn?: number;
  projectId?: string;
  email?: string;
}

export interface RunningMetadataServer {
  /** "127.0.0.1:PORT": the value for GCE_METADATA_HOST. */
  host: string;
  /** Every token issued, oldest first. */
  readonly issued: readonly string[];
  /** Whether `token` was issued here and has not expired. */
  isValid(token: string): boolean;
  /** Requests seen, as "GET /path", for assertions. */
  readonly requests: readonly string[];
  /** Make the next `n` token requests fail with `status` (default 503). */
  failNext(n: number, status?: number): void;
  setExpiresIn(seconds: number): void;
  stop(): Promise<void>;
}

/** Environment that makes google-auth-library use this server and nothing else. */
export function metadataEnv(host: string): Record<string, string> {
  return {
    GCE_METADATA_HOST: host,
    METADATA_SERVER_DETECTION: 'ping-only',
    // No other ADC source may win: no key file, no gcloud user credentials.
    GOOGLE_APPLICATION_CREDENTIALS: '',
    CLOUDSDK_CONFIG: '/nonexistent-artificer-gcloud-config',
  };
}

export async function startMetadataServer(opts: MetadataServerOptions = {}): Promise<RunningMetadataServer> {
  let expiresIn = opts.expiresIn ?? 3600;
  const issued: string[] = [];
  const expiry = new Map<string, number>();
  const requests: string[] = [];
  let failures = 0;
  let failStatus = 503;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://metadata');
    requests.push(`${req.method} ${url.pathname}`);
    res.setHeader('Metadata-Flavor', 'Google');
    if (req.headers['metadata-flavor'] !== 'Google') {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('Missing Metadata-Flavor: Google header');
      return;
    }
    const p = url.pathname.replace(/\/+$/, '');
    const text = (body: string): void => void res.writeHead(200, { 'content-type': 'application/text' }).end(body);
    switch (p) {
      case '':
      case '/computeMetadata/v1':
      case '/computeMetadata/v1/instance':
        return text('');
      case '/computeMetadata/v1/project/project-id':
        return text(opts.projectId ?? 'test-project');
      case '/computeMetadata/v1/instance/service-accounts/default/email':
        return text(opts.email ?? 'artificer@test-project.iam.gserviceaccount.com');
      case '/computeMetadata/v1/instance/service-accounts/default/token': {
        if (failures > 0) {
          failures--;
          res.writeHead(failStatus, { 'content-type': 'text/plain' }).end('injected failure');
          return;
        }
        const token = `ya29.test-${randomBytes(18).toString('base64url')}`;
        issued.push(token);
        expiry.set(token, Date.now() + expiresIn * 1000);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: token, expires_in: expiresIn, token_type: 'Bearer' }));
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  };

  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    issued,
    requests,
    isValid: (token) => (expiry.get(token) ?? 0) > Date.now(),
    failNext(n, status = 503) {
      failures = n;
      failStatus = status;
    },
    setExpiresIn(seconds) {
      expiresIn = seconds;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
