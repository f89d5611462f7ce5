// What a Cloud Function rebuild on a new base costs, with the layer of the last build reused and
// without. The functions-framework server runs the function's handlers against fake-gcs-server, a
// loopback registry and the metadata stand-in, as in the tests.
// Usage: node bench/rebuild.ts [--input FILE] [--runs N]   (default: bench/.data/text/app.log, 3)
// Each run moves the base tag to a new image (crane mutate), then rebuilds the spec twice through
// rebuildOnMessage: once as is (the objects unchanged: the recorded layer is reused), once after
// the artifact was uploaded again (a new generation: every byte is read, compressed and pushed).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { deliverPubsubEvent, deliverStorageEvent, objectEventData, startFunction, type RunningFunction } from '../test/support/functions.ts';
import { startGcs } from '../test/support/gcs.ts';
import { pushBusyboxBase } from '../test/support/images.ts';
import { metadataEnv, startMetadataServer } from '../test/support/metadata-server.ts';
import { startRegistry } from '../test/support/registry.ts';
import { exec, tool } from '../test/support/tools.ts';

const bench = import.meta.dirname;
const { values } = parseArgs({ options: { input: { type: 'string' }, runs: { type: 'string', default: '3' } } });
const input = values.input ?? path.join(bench, '.data/text/app.log');
if (!values.input && !existsSync(input)) execFileSync(process.execPath, [path.join(bench, 'gen.ts'), path.join(bench, '.data')], { stdio: 'inherit' });
const runs = Number(values.runs);

const BUCKET = 'bench-rebuild';
const SPEC = 'app/artificer.json';
const [gcs, md, registry] = await Promise.all([startGcs(), startMetadataServer(), startRegistry({ auth: 'none' })]);
const functions: RunningFunction[] = [];
try {
  const base = (await pushBusyboxBase(registry.host, { repository: 'base/busybox', format: 'docker' })).reference;
  await gcs.createBucket(BUCKET);
  const bucket = gcs.storage().bucket(BUCKET);
  const env = { ...metadataEnv(md.host), STORAGE_EMULATOR_HOST: gcs.url, ARTIFICER_ALLOWED_TARGETS: `${registry.host}/apps/` };
  const [upload, rebuild] = await Promise.all([startFunction({ target: 'buildOnUpload', env }), startFunction({ target: 'rebuildOnMessage', env })]);
  functions.push(upload, rebuild);
  const artifact = readFileSync(input);
  const putArtifact = (): Promise<unknown> => bucket.file('app/app.bin').save(artifact, { resumable: false });
  await putArtifact();
  await bucket.file(SPEC).save(JSON.stringify({ base, target: `${registry.host}/apps/app:1`, files: ['app.bin'] }), { resumable: false });

  /** The summary line the function logs for its latest event on the spec. */
  const summary = (fn: RunningFunction, n: number): Promise<Record<string, unknown>> =>
    fn.waitForLog(() => fn.logs().filter((l) => l.spec === `gs://${BUCKET}/${SPEC}` && l.outcome).length >= n, 120_000).then(
      () => fn.logs().filter((l) => l.spec === `gs://${BUCKET}/${SPEC}` && l.outcome).at(-1)!,
    );
  const [meta] = await bucket.file(SPEC).getMetadata();
  let started = performance.now();
  await deliverStorageEvent(upload.url, objectEventData(meta as Record<string, unknown>));
  const first = await summary(upload, 1);
  console.log(`input ${path.relative(process.cwd(), input)} (${(artifact.byteLength / 2 ** 20).toFixed(0)} MiB); first build: ${Math.round(performance.now() - started)} ms, outcome ${first.outcome}`);

  const rows: Array<{ kind: string; ms: number; fnMs: number; reused: unknown; objectBytes: unknown }> = [];
  let events = 0;
  for (let r = 0; r < runs; r++) {
    for (const kind of ['unchanged objects', 'artifact uploaded again']) {
      if (kind !== 'unchanged objects') await putArtifact();
      await exec(tool('crane'), ['mutate', base, '--env', `ROUND=${r}-${kind.length}`, '-t', base]);
      started = performance.now();
      await deliverPubsubEvent(rebuild.url, 'projects/bench/topics/artificer-rebuild', { bucket: BUCKET, object: SPEC }, { id: `bench-${r}-${kind.length}` });
      const line = await summary(rebuild, ++events);
      if (line.outcome !== 'succeeded') throw new Error(`rebuild failed: ${JSON.stringify(line)}`);
      rows.push({ kind, ms: Math.round(performance.now() - started), fnMs: Number(line.durationMs), reused: line.layerReused, objectBytes: line.objectBytes });
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log('\n| rebuild on a new base | layer reused | median ms (event to answer) | median ms (function) | runs |');
  console.log('|---|---|---:|---:|---:|');
  for (const kind of ['unchanged objects', 'artifact uploaded again']) {
    const mine = rows.filter((x) => x.kind === kind);
    console.log(`| ${kind} | ${[...new Set(mine.map((x) => x.reused))].join('/')} | ${median(mine.map((x) => x.ms))} | ${median(mine.map((x) => x.fnMs))} | ${mine.length} |`);
  }
} finally {
  await Promise.allSettled([...functions.map((f) => f.stop()), registry.stop(), md.stop(), gcs.stop()]);
}
