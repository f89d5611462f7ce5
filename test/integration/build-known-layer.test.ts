// build() given the layer an earlier build made of the same files (BuildRequest.knownLayer): taken
// from the registry without reading a file when the first target holds it, and built as usual
// otherwise. Against a real registry.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { build } from '../../src/build/build.ts';
import type { BuildRequest } from '../../src/build/request.ts';
import type { EntrySource } from '../../src/layer/entry.ts';
import type { ImageManifest } from '../../src/oci/types.ts';
import { parseReference } from '../../src/reference/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { pushBusyboxBase } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let registry: RunningRegistry;
let work: TempDir;
const client = new RegistryClient();

before(async () => {
  [registry, work] = await Promise.all([startRegistry(), tempDir('build-known-layer')]);
  await pushBusyboxBase(registry.host, { repository: 'base/busybox', tag: '1', format: 'docker' });
  await writeFile(path.join(work.path, 'hello'), 'hello\n');
});

after(async () => {
  await registry?.stop();
  await work?.remove();
});

/** The files, counting every pass and check that touches them. */
function counted(): { files: EntrySource; reads: () => number } {
  const inner = localSource([{ from: 'hello', to: '' }], { cwd: work.path });
  let reads = 0;
  const files = Object.assign(
    () => {
      reads++;
      return inner();
    },
    {
      check: async () => {
        reads++;
        await inner.check?.();
      },
    },
  );
  return { files, reads: () => reads };
}

function request(files: EntrySource, targets: string[], extra: Partial<BuildRequest> = {}): BuildRequest {
  return {
    base: parseReference(`${registry.host}/base/busybox:1`),
    platforms: 'default',
    files,
    layer: { mtime: 0 },
    config: { cmd: ['/bin/cat', '/hello'] },
    annotations: {},
    outputs: { registry: targets.map((t) => parseReference(`${registry.host}/${t}`)) },
    ...extra,
  };
}

test('a known layer the target holds is taken as it is: no file read, the same image, pushed to every target', async () => {
  const first = await build(request(counted().files, ['known/app:1']), { registry: client });
  assert.equal(first.layerReused, false);
  assert.equal(first.layerBytes, first.layer.size);

  const { files, reads } = counted();
  const again = await build(request(files, ['known/app:2', 'known/other:1'], { knownLayer: first.layer }), { registry: client });
  assert.equal(reads(), 0, 'the files were not touched');
  assert.equal(again.layerReused, true);
  assert.deepEqual(again.layer, first.layer);
  assert.equal(again.digest, first.digest, 'the same image as a build from the files');
  // The second repository got the layer from the first, as it would an uploaded one.
  const { manifest } = await client.getManifest({ registry: registry.host, repository: 'known/other' }, '1');
  assert.equal((manifest as ImageManifest).layers.at(-1)!.digest, first.layer.digest);
  assert.equal(await client.hasBlob({ registry: registry.host, repository: 'known/other' }, first.layer.digest), true);
});

test('a known layer the target does not hold is built from the files', async () => {
  const first = await build(request(counted().files, ['known/app:1']), { registry: client });
  const { files, reads } = counted();
  const fresh = await build(request(files, ['known/elsewhere:1'], { knownLayer: first.layer }), { registry: client });
  assert.ok(reads() > 0);
  assert.equal(fresh.layerReused, false);
  assert.deepEqual(fresh.layer, first.layer, 'built again, to the same bytes');

  // A hint naming a blob that exists nowhere is not trusted either.
  const bogus = { digest: `sha256:${'0'.repeat(64)}`, diffId: `sha256:${'1'.repeat(64)}`, size: 1 } as const;
  const second = counted();
  const fixed = await build(request(second.files, ['known/app:3'], { knownLayer: bogus }), { registry: client });
  assert.ok(second.reads() > 0);
  assert.deepEqual(fixed.layer, first.layer);
});

test('an OCI layout or a tarball needs the bytes: the files are read even when the target holds the layer', async () => {
  const first = await build(request(counted().files, ['known/app:1']), { registry: client });
  const { files, reads } = counted();
  const out = path.join(work.path, 'layout');
  const withLayout = await build(request(files, ['known/app:4'], { knownLayer: first.layer, outputs: { registry: [parseReference(`${registry.host}/known/app:4`)], ociLayout: out } }), {
    registry: client,
  });
  assert.ok(reads() > 0);
  assert.equal(withLayout.layerReused, false);
  assert.deepEqual(withLayout.layer, first.layer);

  const second = counted();
  const tarball = path.join(work.path, 'image.tar');
  const withTarball = await build(
    request(second.files, ['known/app:5'], { knownLayer: first.layer, outputs: { registry: [parseReference(`${registry.host}/known/app:5`)], tarball } }),
    { registry: client },
  );
  assert.ok(second.reads() > 0);
  assert.equal(withTarball.layerReused, false);
  assert.deepEqual(withTarball.layer, first.layer);
});
