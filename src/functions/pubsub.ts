/**
 * Publishing to Pub/Sub through its REST API (`projects.topics.publish`), for the base-image
 * fan-out: one small JSON message per spec to rebuild. The client library would bring gRPC and
 * dozens of modules for one POST; this uses the undici and google-auth-library the function
 * already loads. With `PUBSUB_EMULATOR_HOST` set (which @google-cloud/pubsub honours too) the
 * emulator is spoken to over plain HTTP, without credentials.
 */
import { GoogleAuth } from 'google-auth-library';
import { request } from '../registry/http.ts';
import { redactSecrets } from './logger.ts';

/** Most messages one publish request may carry (the API's limit is 1,000). */
const BATCH = 1000;
const SCOPES = ['https://www.googleapis.com/auth/pubsub'];

export interface Publisher {
  /** Publishes each payload as one JSON message, in batches; resolves with the message ids. */
  publish(topic: string, payloads: readonly unknown[]): Promise<string[]>;
}

/**
 * A publish the service refused or could not take. `status` is the HTTP status when there was
 * one (5xx and 429 are temporary, as for Cloud Storage errors); a network failure is the `cause`.
 */
export class PublishError extends Error {
  readonly status: number | undefined;
  /** How many of the payloads were published (in earlier batches) before this failure. */
  published = 0;
  constructor(message: string, status: number | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PublishError';
    this.status = status;
  }
}

export interface RestPublisherOptions {
  /** `host:port` of the Pub/Sub emulator; default `PUBSUB_EMULATOR_HOST`. */
  readonly emulatorHost?: string;
  /** Injected for tests; default Application Default Credentials. */
  readonly auth?: Pick<GoogleAuth, 'getAccessToken'>;
}

export class RestPublisher implements Publisher {
  readonly #base: string;
  readonly #auth: Pick<GoogleAuth, 'getAccessToken'> | undefined;

  constructor(opts: RestPublisherOptions = {}) {
    const emulator = opts.emulatorHost ?? process.env.PUBSUB_EMULATOR_HOST;
    this.#base = emulator ? `http://${emulator}` : 'https://pubsub.googleapis.com';
    this.#auth = emulator ? undefined : (opts.auth ?? new GoogleAuth({ scopes: SCOPES }));
  }

  async publish(topic: string, payloads: readonly unknown[]): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < payloads.length; i += BATCH) {
      const messages = payloads.slice(i, i + BATCH).map((p) => ({ data: Buffer.from(JSON.stringify(p)).toString('base64') }));
      try {
        ids.push(...(await this.#publishBatch(topic, messages)));
      } catch (err) {
        if (err instanceof PublishError) err.published = i;
        throw err;
      }
    }
    return ids;
  }

  async #publishBatch(topic: string, messages: ReadonlyArray<{ data: string }>): Promise<string[]> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.#auth) headers.authorization = `Bearer ${await this.#auth.getAccessToken()}`;
    let res;
    try {
      res = await request(`${this.#base}/v1/${topic}:publish`, { method: 'POST', headers, body: JSON.stringify({ messages }) });
    } catch (err) {
      throw new PublishError(`publishing to ${topic}: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      const detail = redactSecrets(text.replace(/\s+/g, ' ').slice(0, 300));
      throw new PublishError(`publishing to ${topic}: Pub/Sub answered ${res.statusCode}: ${detail}`, res.statusCode);
    }
    const ids = (JSON.parse(text) as { messageIds?: unknown }).messageIds;
    return Array.isArray(ids) ? ids.map(String) : [];
  }
}
