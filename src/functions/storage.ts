import events from 'node:events';
import { Storage } from '@google-cloud/storage';
import { crc32cValidator } from './crc32c.ts';

/**
 * Node's listener limit for the function's process. @google-cloud/storage 8.x puts up to 12
 * `error` and `close` listeners on one download's response stream since its teeny-request 11
 * moved to node-fetch 3, over Node's default of 10: every download of 64 KiB or more printed two
 * MaxListenersExceededWarnings, "possible memory leak", on stderr, which Cloud Logging shows as
 * errors (10,000 of them for a build of 5,000 such objects). The count is fixed per download
 * (nothing leaks; it is reached before the first byte): googleapis/google-cloud-node#9185, open
 * as of 2026-11. 16 leaves room for a listener or two more in a later version.
 */
export const STORAGE_STREAM_LISTENERS = 16;

/**
 * The function's Cloud Storage client. On Cloud Functions: `new Storage()` (ADC).
 *
 * With `STORAGE_EMULATOR_HOST=http://host:port` (fake-gcs-server, the usual form that gcloud and
 * the other client libraries take), @google-cloud/storage v8 uses the variable verbatim as the JSON
 * API base URL (storage.js: `baseUrl = EMULATOR_HOST || apiEndpoint + '/storage/v1'`), so every
 * metadata request misses the `/storage/v1` prefix and 404s. We accept both forms: a bare origin
 * gets `/storage/v1` appended to the JSON API base; uploads and downloads use the origin.
 *
 * Downloads are checked against the object's CRC32C as the library does, but with
 * {@link crc32cValidator} (~9× faster than its own). Also raises Node's default listener limit
 * to {@link STORAGE_STREAM_LISTENERS}, so downloads do not fill the function's log with false
 * leak warnings.
 */
export function createStorage(env: Readonly<Record<string, string | undefined>> = process.env): Storage {
  // Process-wide, since those streams are the library's own; a real leak still passes 16.
  if (events.defaultMaxListeners < STORAGE_STREAM_LISTENERS) events.defaultMaxListeners = STORAGE_STREAM_LISTENERS;
  const emulator = env.STORAGE_EMULATOR_HOST?.trim();
  if (!emulator) return new Storage({ crc32cGenerator: crc32cValidator });
  const withScheme = /^https?:\/\//.test(emulator) ? emulator : `http://${emulator}`;
  const origin = withScheme.replace(/\/+$/, '').replace(/\/storage\/v1$/, '');
  const storage = new Storage({ apiEndpoint: origin, useAuthWithCustomEndpoint: false, crc32cGenerator: crc32cValidator });
  storage.baseUrl = `${origin}/storage/v1`;
  return storage;
}
