/**
 * Credentials for Google's registries from Application Default Credentials: on Cloud Functions
 * that is the function's service account through the metadata server. The access token is handed
 * to the registry client as `oauth2accesstoken` / token, which it exchanges at the registry's
 * token endpoint (Artifact Registry and gcr.io accept exactly that:
 * https://cloud.google.com/artifact-registry/docs/docker/authentication#token).
 *
 * The token goes to Google registry hosts only (`*.pkg.dev`, `gcr.io`, `*.gcr.io`), plus hosts
 * listed in `ARTIFICER_GOOGLE_REGISTRIES` — a test/dev knob for loopback registries that stand in
 * for Artifact Registry. Any other host gets no credentials (anonymous).
 *
 * google-auth-library caches the token and fetches a new one shortly before it expires, so a
 * `resolve()` during a long push (the registry client calls it again on a 401) gets a fresh one.
 */
import { GoogleAuth } from 'google-auth-library';
import { ArtificerError } from '../errors.ts';
import type { CredentialProvider, ResolvedCredential } from '../registry/types.ts';

export const GOOGLE_CREDENTIAL_SOURCE = 'google application default credentials';
const SCOPES = ['https://www.googleapis.com/auth/cloud-platform'];

/** Whether `registry` (host[:port]) is one of Google's registries. */
export function isGoogleRegistry(registry: string, extra: readonly string[] = []): boolean {
  const host = registry.toLowerCase();
  if (extra.includes(host)) return true;
  const name = host.replace(/:\d+$/, '');
  if (name !== host) return false; // Google's registries are on 443; an explicit port is someone else
  return name === 'gcr.io' || name.endsWith('.gcr.io') || name.endsWith('.pkg.dev');
}

/** Parses `ARTIFICER_GOOGLE_REGISTRIES` ("127.0.0.1:5000,localhost:5001"). */
export function parseGoogleRegistries(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

export interface GoogleCredentialsOptions {
  /** Extra hosts that get the token (tests); default from ARTIFICER_GOOGLE_REGISTRIES. */
  readonly extraRegistries?: readonly string[];
  /** Injected for tests; default `new GoogleAuth({ scopes: cloud-platform })`. */
  readonly auth?: Pick<GoogleAuth, 'getAccessToken'>;
}

export class GoogleCredentialProvider implements CredentialProvider {
  readonly #auth: Pick<GoogleAuth, 'getAccessToken'>;
  readonly #extra: readonly string[];

  constructor(opts: GoogleCredentialsOptions = {}) {
    this.#auth = opts.auth ?? new GoogleAuth({ scopes: SCOPES });
    this.#extra = opts.extraRegistries ?? parseGoogleRegistries(process.env.ARTIFICER_GOOGLE_REGISTRIES);
  }

  async resolve(registry: string): Promise<ResolvedCredential | undefined> {
    if (!isGoogleRegistry(registry, this.#extra)) return undefined;
    let token: string | null | undefined;
    try {
      token = await this.#auth.getAccessToken();
    } catch (err) {
      // The reason from google-auth-library names the step (metadata server, file), not a secret.
      const reason = err instanceof Error ? err.message.replace(/ya29\.[\w.-]+/g, 'REDACTED') : 'unknown error';
      // A metadata server hiccup is worth a retry.
      throw new ArtificerError('ARTIFICER_UNAUTHORIZED', `cannot get an access token for ${registry} from ${GOOGLE_CREDENTIAL_SOURCE}: ${reason}`, {
        temporary: true,
      });
    }
    if (!token) return undefined;
    return { credential: { username: 'oauth2accesstoken', password: token }, source: GOOGLE_CREDENTIAL_SOURCE };
  }
}
