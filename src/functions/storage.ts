import { Storage } from '@google-cloud/storage';

/**
 * The function's Cloud Storage client. On Cloud Functions: `new Storage()` (ADC).
 *
 * With `STORAGE_EMULATOR_HOST=http://host:port` (fake-gcs-server, the usual form that gcloud and
 * the other client libraries take), @google-cloud/storage v8 uses the variable verbatim as the JSON
 * API base URL (storage.js: `baseUrl = EMULATOR_HOST || apiEndpoint + '/storage/v1'`), so every
 * metadata request misses the `/storage/v1` prefix and 404s. We accept both forms: a bare origin
 * gets `/storage/v1` appended to the JSON API base; uploads and downloads use the origin.
 */
export function createStorage(env: Readonly<Record<string, string | undefined>> = process.env): Storage {
  const emulator = env.STORAGE_EMULATOR_HOST?.trim();
  if (!emulator) return new Storage();
  const withScheme = /^https?:\/\//.test(emulator) ? emulator : `http://${emulator}`;
  const origin = withScheme.replace(/\/+$/, '').replace(/\/storage\/v1$/, '');
  const storage = new Storage({ apiEndpoint: origin, useAuthWithCustomEndpoint: false });
  storage.baseUrl = `${origin}/storage/v1`;
  return storage;
}
