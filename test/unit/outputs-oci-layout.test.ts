// The OCI layout output on its own edges: a directory whose index.json is not an image index.
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { build } from '../../src/build/build.ts';
import { OutputError } from '../../src/errors.ts';
import { MediaTypes } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { tempDir } from '../support/tmp.ts';

function request(cwd: string, from: string, ociLayout: string) {
  return {
    base: 'scratch' as const,
    platforms: 'default' as const,
    files: localSource([{ from, to: '/d' }], { cwd }),
    layer: { mtime: 0 },
    config: {},
    annotations: {},
    outputs: { registry: [], ociLayout },
  };
}

describe('an existing directory that is not an OCI layout', () => {
  const rows: Array<[string, string, RegExp]> = [
    ['some other JSON object', '{"foo":1}', /no schemaVersion/],
    ['no manifests array', '{"schemaVersion":2,"manifests":{"a":1}}', /no "manifests" array/],
    ['another schema', '{"schemaVersion":1,"manifests":[]}', /schemaVersion is 1, not 2/],
    ['an entry that is no object', '{"schemaVersion":2,"manifests":[null]}', /manifests\[0\] is not an object/],
    ['an array', '[]', /not a JSON object/],
    ['not JSON', 'hello', /index\.json is not JSON/],
  ];
  for (const [name, text, reason] of rows) {
    test(name, async () => {
      await using t = await tempDir('oci-index');
      await writeFile(path.join(t.path, 'server'), 'hi');
      const dir = path.join(t.path, 'layout');
      await mkdir(dir);
      await writeFile(path.join(dir, 'index.json'), text);
      await assert.rejects(build(request(t.path, 'server', dir), { registry: new RegistryClient() }), (err: unknown) => {
        assert.ok(err instanceof OutputError, String(err));
        assert.equal(err.path, dir);
        assert.match(err.message, new RegExp(`^cannot write ${dir}: its index\\.json is not`));
        assert.match(err.message, reason);
        return true;
      });
      // Refused before anything was added to it.
      assert.deepEqual(await readdir(dir), ['index.json']);
    });
  }

  test('a valid index is extended', async () => {
    await using t = await tempDir('oci-index');
    await writeFile(path.join(t.path, 'server'), 'hi');
    const dir = path.join(t.path, 'layout');
    await mkdir(dir);
    const other = { mediaType: MediaTypes.ociManifest, digest: `sha256:${'1'.repeat(64)}`, size: 1, annotations: { x: 'y' } };
    await writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [other] }));
    await build(request(t.path, 'server', dir), { registry: new RegistryClient() });
    const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    assert.equal(index.manifests.length, 2);
    assert.deepEqual(index.manifests[0], other);
  });
});
