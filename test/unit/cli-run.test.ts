// runCli on scratch with an OCI layout as the only output: the whole CLI path (flags → request →
// build → digest file) without a registry, so it runs as a unit test.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { runCli } from '../../src/cli/run.ts';
import type { ImageIndex } from '../../src/oci/types.ts';
import { tempDir } from '../support/tmp.ts';

async function cli(argv: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await runCli(argv, { stdout, stderr, env: {}, cwd, version: 'test' });
  return { code, stdout: out, stderr: err };
}

test('--digest-file of a multi-platform build holds the index digest, the one the layout is tagged with', async () => {
  await using t = await tempDir('cli-digest-file');
  await writeFile(path.join(t.path, 'server'), 'hi');
  const r = await cli(['-b', 'scratch', '-f', 'server', '-p', 'linux/amd64,linux/arm64', '-o', 'oci:layout', '--digest-file', 'digest'], t.path);
  assert.equal(r.code, 0, r.stderr);
  const layout = JSON.parse(await readFile(path.join(t.path, 'layout', 'index.json'), 'utf8')) as ImageIndex;
  assert.equal(layout.manifests.length, 1);
  assert.equal(await readFile(path.join(t.path, 'digest'), 'utf8'), `${layout.manifests[0]!.digest}\n`);
});
