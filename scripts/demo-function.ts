// The Cloud Function, locally (the second half of `npm run demo`): fake-gcs-server as Cloud
// Storage, docker-registry, the function in the functions-framework server (built dist/, as
// `npx functions-framework` serves it), an example artifact + spec uploaded, the Eventarc event
// delivered; prints the record and what the built container prints.
import { deliverStorageEvent, objectEventData, startFunction } from '../test/support/functions.ts';
import { startGcs } from '../test/support/gcs.ts';
import { pushBusyboxBase } from '../test/support/images.ts';
import { metadataEnv, startMetadataServer } from '../test/support/metadata-server.ts';
import { startRegistry } from '../test/support/registry.ts';
import { pullAndRun } from '../test/support/runc.ts';

const say = (s: string): void => void process.stderr.write(`demo: ${s}\n`);
const gcs = await startGcs();
const md = await startMetadataServer();
const registry = await startRegistry({ auth: 'none' });
let fn: Awaited<ReturnType<typeof startFunction>> | undefined;
try {
  say(`Cloud Storage (fake-gcs-server) at ${gcs.url}, registry at ${registry.url}`);
  const base = (await pushBusyboxBase(registry.host, { repository: 'base/busybox', format: 'oci' })).reference;
  fn = await startFunction({
    target: 'buildOnUpload',
    source: 'package',
    env: { ...metadataEnv(md.host), STORAGE_EMULATOR_HOST: gcs.url, ARTIFICER_ALLOWED_TARGETS: `${registry.host}/demo/` },
  });
  say(`function buildOnUpload at ${fn.url}`);
  await gcs.createBucket('artifacts');
  const bucket = gcs.storage().bucket('artifacts');
  await bucket.file('hello/bin/hello').save('#!/bin/sh\necho "Hello from a bucket-built image ($GREETING)"\n');
  const spec = { base, target: `${registry.host}/demo/hello:1`, files: [{ from: 'bin/hello', to: '/usr/local/bin/', mode: '0755' }], env: { GREETING: 'artificer' }, cmd: ['hello'] };
  await bucket.file('hello/artificer.json').save(JSON.stringify(spec, null, 2));
  say('uploaded gs://artifacts/hello/bin/hello, then gs://artifacts/hello/artificer.json:');
  process.stderr.write(JSON.stringify(spec, null, 2) + '\n');
  const [meta] = await bucket.file('hello/artificer.json').getMetadata();
  const res = await deliverStorageEvent(fn.url, objectEventData(meta as Record<string, unknown>));
  say(`event delivered: HTTP ${res.status}`);
  process.stderr.write(fn.logs().map((l) => JSON.stringify(l)).join('\n') + '\n');
  const [after] = await bucket.file('hello/artificer.json').getMetadata();
  const record = (after.metadata ?? {}) as Record<string, string>;
  say('record on gs://artifacts/hello/artificer.json:');
  console.log(JSON.stringify(record, null, 2));
  if (record['artificer-status'] !== 'succeeded') throw new Error('the build failed');
  const run = await pullAndRun(record['artificer-image']!, { insecure: true });
  say('the container prints:');
  console.log(run.stdout.trimEnd());
} finally {
  await Promise.allSettled([fn?.stop(), registry.stop(), md.stop(), gcs.stop()]);
}
