// build() on scratch into an OCI layout: no registry is involved, so what the build decides about
// platforms and outputs can be read straight from the layout's files.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { build } from '../../src/build/build.ts';
import type { BuildRequest } from '../../src/build/request.ts';
import { UsageError } from '../../src/errors.ts';
import { MediaTypes, type ImageConfig, type ImageIndex, type ImageManifest } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { tempDir } from '../support/tmp.ts';

function request(cwd: string, outputs: BuildRequest['outputs'], platforms: BuildRequest['platforms'] = 'default'): BuildRequest {
  return {
    base: 'scratch',
    platforms,
    files: localSource([{ from: 'server', to: '' }], { cwd }),
    layer: { mtime: 0 },
    config: {},
    annotations: {},
    outputs,
  };
}

const readJson = async <T>(file: string): Promise<T> => JSON.parse(await readFile(file, 'utf8')) as T;
const blob = (dir: string, digest: string) => path.join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));

test('scratch with two platforms: an index naming one image per platform', async () => {
  await using t = await tempDir('scratch-platforms');
  await writeFile(path.join(t.path, 'server'), 'hi');
  const dir = path.join(t.path, 'layout');
  const platforms = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }];
  const result = await build(request(t.path, { registry: [], ociLayout: dir }, platforms), { registry: new RegistryClient() });
  assert.equal(result.mediaType, MediaTypes.ociIndex);
  const layout = await readJson<ImageIndex>(path.join(dir, 'index.json'));
  assert.deepEqual(layout.manifests.map((m) => [m.mediaType, m.digest]), [[MediaTypes.ociIndex, result.digest]]);
  const index = await readJson<ImageIndex>(blob(dir, result.digest));
  assert.deepEqual(index.manifests.map((m) => m.platform), platforms);
  for (const m of index.manifests) {
    const manifest = await readJson<ImageManifest>(blob(dir, m.digest));
    const config = await readJson<ImageConfig>(blob(dir, manifest.config.digest));
    assert.equal(config.architecture, m.platform!.architecture);
  }
});

test('scratch with --platform all: a usage error (scratch has no platforms to take), not a crash', async () => {
  await using t = await tempDir('scratch-all');
  await writeFile(path.join(t.path, 'server'), 'hi');
  await assert.rejects(build(request(t.path, { registry: [], ociLayout: path.join(t.path, 'layout') }, 'all'), { registry: new RegistryClient() }), (err: unknown) => {
    assert.ok(err instanceof UsageError, String(err));
    assert.match(err.message, /--platform all needs a base image/);
    return true;
  });
});

test('nothing to push and no output: a usage error before any file is read', async () => {
  await using t = await tempDir('scratch-nothing');
  // No file named "server" here: the error must come first.
  await assert.rejects(build(request(t.path, { registry: [] }), { registry: new RegistryClient() }), (err: unknown) => {
    assert.ok(err instanceof UsageError, String(err));
    assert.match(err.message, /^nothing to do/);
    return true;
  });
});
