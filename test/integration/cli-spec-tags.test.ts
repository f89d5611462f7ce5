// runCli in-process against a real registry: `--tag` beside `--spec` adds to the spec's own target
// and tags (the e2e suite covers -t overriding the spec's target, not this).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, test } from 'node:test';
import { runCli } from '../../src/cli/run.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let registry: RunningRegistry;
let work: TempDir;

before(async () => {
  [registry, work] = await Promise.all([startRegistry(), tempDir('cli-spec-tags')]);
  await writeFile(path.join(work.path, 'hello'), 'hello\n');
});

after(async () => {
  await registry?.stop();
  await work?.remove();
});

test('--spec with --tag and no -t: the spec target, its tags and the --tag ones are all pushed', async () => {
  await writeFile(path.join(work.path, 'artificer.json'), JSON.stringify({ base: 'scratch', target: `${registry.host}/spec/app:1`, tags: ['from-spec'], files: ['hello'] }));
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await runCli(['--spec', 'artificer.json', '--tag', 'from-flag', '--tag', `${registry.host}/other/app:2`], { stdout, stderr, env: {}, cwd: work.path, version: 'test' });
  assert.equal(code, 0, err);
  const client = new RegistryClient({ retry: { attempts: 1 } });
  const digests = new Set<string>();
  for (const [repository, tag] of [['spec/app', '1'], ['spec/app', 'from-spec'], ['spec/app', 'from-flag'], ['other/app', '2']] as const) {
    digests.add((await client.getManifest({ registry: registry.host, repository }, tag)).digest);
  }
  assert.equal(digests.size, 1, [...digests].join(' '));
});
