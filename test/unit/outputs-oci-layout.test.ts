// The OCI layout output on its own edges: a directory whose index.json is not an image index, a
// layer whose bytes change between the pass that named it and the pass that writes it, and the
// check the CLI runs so an output is never written inside the files of the layer.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import type { ResolvedBase } from '../../src/build/base.ts';
import { build } from '../../src/build/build.ts';
import { assembleImage } from '../../src/build/image.ts';
import { writeOciLayout } from '../../src/build/outputs/oci-layout.ts';
import { isInside, outputInside, outputProblem } from '../../src/build/outputs/paths.ts';
import { DigestMismatchError, OutputError, SourceError } from '../../src/errors.ts';
import type { Layer } from '../../src/layer/layer.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { Registry } from '../../src/registry/types.ts';
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

test('a layout inside the files of its layer: "files changed", not a registry to blame', async () => {
  await using t = await tempDir('oci-inside');
  await writeFile(path.join(t.path, 'server'), 'hi');
  // The first pass (measure) sees no layout; the pass that writes the layer sees its first files.
  await assert.rejects(build(request(t.path, '.', path.join(t.path, 'img')), { registry: new RegistryClient() }), (err: unknown) => {
    assert.ok(err instanceof SourceError, String(err));
    assert.match(err.message, /files changed while the image was being built/);
    return true;
  });
});

test('a new layer whose bytes are not its digest blames the content', async () => {
  await using t = await tempDir('oci-content');
  const bytes = Buffer.from('not the layer');
  const descriptor = { mediaType: MediaTypes.ociLayerGzip, digest: `sha256:${'2'.repeat(64)}` as const, size: bytes.length };
  const digests = { digest: descriptor.digest, diffId: `sha256:${'3'.repeat(64)}` as const, size: bytes.length };
  const layer: Layer = {
    open: () => ({ stream: Readable.from([bytes]), done: Promise.resolve(digests) }),
    measure: async () => digests,
    known: () => digests,
  };
  const base: ResolvedBase = { family: 'oci', images: [{ platform: { os: 'linux', architecture: 'amd64' } }], multiPlatform: false };
  const image = assembleImage(base, base.images[0]!, { config: {}, layer: { mtime: 0 }, annotations: {} }, { descriptor, diffId: digests.diffId });
  await assert.rejects(
    writeOciLayout(path.join(t.path, 'img'), { registry: {} as Registry, base, layer, images: [image], index: undefined, tags: [] }),
    (err: unknown) => {
      assert.ok(err instanceof DigestMismatchError, String(err));
      assert.equal(err.message, `blob: digest mismatch: expected ${descriptor.digest}, content has ${sha256(bytes)}`);
      return true;
    },
  );
});

describe('outputInside: which source an output would be written into', () => {
  test('inside, equal, beside', () => {
    assert.equal(outputInside(['/p/a', '/p'], '/p/img'), '/p');
    assert.equal(outputInside(['/p/img'], '/p/img'), '/p/img');
    assert.equal(outputInside(['/p/img'], '/p/img/x'), '/p/img');
    assert.equal(outputInside(['/'], '/img'), '/');
    assert.equal(outputInside(['/p/a', '/q'], '/p/img'), undefined);
    assert.equal(outputInside(['/p/im'], '/p/img'), undefined, 'a prefix of the name is not a parent');
    assert.equal(outputInside(['/p/img/x'], '/p/img'), undefined, 'a source inside the output is not written to');
    assert.equal(outputInside([], '/p/img'), undefined);
  });

  test('isInside: the same rule for one directory', () => {
    assert.equal(isInside('/p', '/p/img'), true);
    assert.equal(isInside('/p/img', '/p/img'), true);
    assert.equal(isInside('/p/im', '/p/img'), false);
    assert.equal(isInside('/p/img/x', '/p/img'), false);
  });

  test('through symlinks, as the walk sees them', async () => {
    await using t = await tempDir('oci-paths');
    const proj = path.join(t.path, 'proj');
    const elsewhere = path.join(t.path, 'elsewhere');
    await mkdir(path.join(proj, 'sub'), { recursive: true });
    await mkdir(elsewhere);
    await symlink(proj, path.join(t.path, 'link-to-proj'));
    await symlink(path.join(proj, 'sub'), path.join(t.path, 'link-to-sub'));
    await symlink(elsewhere, path.join(proj, 'out'));
    // A source named through a symlink is walked where it points.
    assert.equal(outputInside([path.join(t.path, 'link-to-proj')], path.join(proj, 'img')), path.join(t.path, 'link-to-proj'));
    // An output reached through a symlink from outside lands in the tree.
    assert.equal(outputInside([proj], path.join(t.path, 'link-to-sub', 'new', 'img.tar')), proj);
    // A symlink inside the tree stays a link in the layer: what is written behind it is not walked.
    assert.equal(outputInside([proj], path.join(proj, 'out', 'img')), undefined);
  });
});

test('outputProblem: a file needs its directory, a layout its nearest existing ancestor (it is made with mkdir -p)', async () => {
  await using t = await tempDir('output-problem');
  const p = (rel: string) => path.join(t.path, rel);
  await mkdir(p('dir'));
  await writeFile(p('file'), 'x');
  assert.equal(outputProblem(p('dir/image.tar'), 'file'), undefined);
  assert.equal(outputProblem(p('file'), 'file'), undefined, 'an existing file is replaced');
  assert.equal(outputProblem(p('nodir/image.tar'), 'file'), `its directory ${p('nodir')} does not exist`);
  assert.equal(outputProblem(p('file/image.tar'), 'file'), `its directory ${p('file')} is not a directory`);
  assert.equal(outputProblem(p('dir'), 'file'), `${p('dir')} is a directory`);
  assert.equal(outputProblem(p('dir'), 'directory'), undefined);
  assert.equal(outputProblem(p('new/nested/layout'), 'directory'), undefined);
  assert.equal(outputProblem(p('file'), 'directory'), `${p('file')} is not a directory`);
  assert.equal(outputProblem(p('file/sub/layout'), 'directory'), `it cannot be created: ${p('file')} is not a directory`);
});

test('outputProblem: a digest file that exists is written in place, so only it must be writable (kaniko/Tekton\'s /dev/termination-log as non-root)', async (t) => {
  await using tmp = await tempDir('output-problem-written');
  const p = (rel: string) => path.join(tmp.path, rel);
  await mkdir(p('ro'));
  await writeFile(p('ro/digest'), '');
  await writeFile(p('ro/locked'), '');
  await chmod(p('ro/digest'), 0o666);
  await chmod(p('ro/locked'), 0o444);
  await chmod(p('ro'), 0o555);
  await chmod(tmp.path, 0o755);
  if (process.getuid?.() !== 0) return t.skip('needs root to run the check as another user');
  // As root access(2) passes everywhere: the check runs in a child as nobody, as CI jobs do.
  const probe = (rel: string, kind: string): string => {
    const code = `import(${JSON.stringify(new URL('../../src/build/outputs/paths.ts', import.meta.url).href)}).then((m) => console.log(JSON.stringify(m.outputProblem(${JSON.stringify(p(rel))}, ${JSON.stringify(kind)}) ?? null)))`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { uid: 65534, gid: 65534, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as string;
  };
  assert.equal(probe('ro/digest', 'written-file'), null, 'an existing writable file in a read-only directory');
  assert.equal(probe('ro/locked', 'written-file'), `${p('ro/locked')} is not writable`);
  assert.equal(probe('ro/new', 'written-file'), `its directory ${p('ro')} is not writable`, 'a new one needs its directory');
  assert.equal(probe('ro/digest', 'file'), `its directory ${p('ro')} is not writable`, 'a tarball is renamed into place');
});

test('a layout built into again: the entry of the same tag is replaced, not listed twice (skopeo would call oci:DIR:TAG ambiguous)', async () => {
  await using t = await tempDir('oci-rebuild');
  const dir = path.join(t.path, 'layout');
  await writeFile(path.join(t.path, 'server'), 'one');
  const first = await build(request(t.path, 'server', dir), { registry: new RegistryClient() });
  await writeFile(path.join(t.path, 'server'), 'two');
  const second = await build(request(t.path, 'server', dir), { registry: new RegistryClient() });
  assert.notEqual(first.digest, second.digest);
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  assert.deepEqual(index.manifests.map((m) => [m.digest, m.annotations]), [[second.digest, { 'org.opencontainers.image.ref.name': 'latest' }]]);
  // The file that makes a directory an OCI image layout (image-layout.md), which skopeo and umoci look for.
  assert.deepEqual(JSON.parse(await readFile(path.join(dir, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
});
