import assert from 'node:assert/strict';
import { test } from 'node:test';
import { alignedHistory, applyContainerConfig, createdAt, mergeEnv, newImageConfig, UNDESCRIBED_LAYER_COMMENT } from '../../src/build/config.ts';
import type { ImageConfig } from '../../src/oci/types.ts';

const alpinePath = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

test('mergeEnv keeps the base PATH, replaces keys in place, appends new ones in order', () => {
  assert.deepEqual(mergeEnv([alpinePath, 'A=1'], [['LOGLEVEL', '1'], ['A', '2'], ['ENVIRONMENT', 'prod']]), [
    alpinePath,
    'A=2',
    'LOGLEVEL=1',
    'ENVIRONMENT=prod',
  ]);
  assert.deepEqual(mergeEnv(undefined, [['X', 'a=b']]), ['X=a=b']);
  // A key that is a prefix of another must not match it.
  assert.deepEqual(mergeEnv(['PATHX=1'], [['PATH', '/bin']]), ['PATHX=1', 'PATH=/bin']);
  // A bare key (Docker allows "FOO" without "=") is replaced too.
  assert.deepEqual(mergeEnv(['FOO'], [['FOO', 'bar']]), ['FOO=bar']);
});

test('entrypoint clears the inherited cmd unless a cmd is given (Docker semantics)', () => {
  const base = { Cmd: ['sh'], Entrypoint: null, Env: [alpinePath] };
  assert.deepEqual(applyContainerConfig(base, { entrypoint: ['/server'] }), { Entrypoint: ['/server'], Env: [alpinePath] });
  assert.deepEqual(applyContainerConfig(base, { entrypoint: ['/server'], cmd: ['--port', '80'] }), {
    Cmd: ['--port', '80'],
    Entrypoint: ['/server'],
    Env: [alpinePath],
  });
  assert.deepEqual(applyContainerConfig(base, { cmd: ['/server'] }), { Cmd: ['/server'], Entrypoint: null, Env: [alpinePath] });
});

test('labels and ports merge with the base; workdir and user replace', () => {
  const base = { Labels: { a: '1', b: '2' }, ExposedPorts: { '80/tcp': {} }, WorkingDir: '/', User: 'root' };
  assert.deepEqual(applyContainerConfig(base, { labels: { b: '3', c: '4' }, exposedPorts: ['8080/tcp'], workdir: '/app', user: '65532' }), {
    Labels: { a: '1', b: '3', c: '4' },
    ExposedPorts: { '80/tcp': {}, '8080/tcp': {} },
    WorkingDir: '/app',
    User: '65532',
  });
});

test('newImageConfig appends a diff_id and a history entry, created is the layer mtime', () => {
  const base: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    created: '2024-05-01T00:00:00Z',
    container: 'abc',
    config: { Env: [alpinePath], Cmd: ['sh'] },
    rootfs: { type: 'layers', diff_ids: ['sha256:' + 'a'.repeat(64) as `sha256:${string}`] },
    history: [{ created_by: 'ADD rootfs' }],
  };
  const diffId = `sha256:${'b'.repeat(64)}` as const;
  const out = newImageConfig(base, { os: 'linux', architecture: 'amd64' }, { env: [['LOGLEVEL', '1']], cmd: ['/server'], createdBy: 'artificer -f server' }, { mtime: 1700000000 }, diffId);
  assert.equal(out.created, '2023-11-14T22:13:20Z');
  assert.equal(out.container, 'abc', 'unknown base fields are kept');
  assert.deepEqual(out.rootfs.diff_ids, [`sha256:${'a'.repeat(64)}`, diffId]);
  assert.deepEqual(out.history?.at(-1), { created: '2023-11-14T22:13:20Z', created_by: 'artificer -f server', comment: 'artificer' });
  assert.deepEqual(out.config?.Env, [alpinePath, 'LOGLEVEL=1']);
  assert.deepEqual(out.config?.Cmd, ['/server']);
  assert.equal(createdAt({ mtime: 0 }), '1970-01-01T00:00:00Z');
});

test('scratch: a config with the platform and only the new layer', () => {
  const diffId = `sha256:${'c'.repeat(64)}` as const;
  const out = newImageConfig(undefined, { os: 'linux', architecture: 'arm', variant: 'v7' }, { cmd: ['/app'] }, { mtime: 0 }, diffId);
  assert.equal(out.os, 'linux');
  assert.equal(out.architecture, 'arm');
  assert.equal(out.variant, 'v7');
  assert.deepEqual(out.rootfs, { type: 'layers', diff_ids: [diffId] });
  assert.deepEqual(out.config, { Cmd: ['/app'] });
});

const ids = (n: number) => Array.from({ length: n }, (_, i) => `sha256:${String(i).repeat(64).slice(0, 64)}` as const);
/** Non-empty history entries: what consumers pair with layers, one for one. */
const described = (history: readonly { empty_layer?: boolean }[] | undefined) => (history ?? []).filter((h) => !h.empty_layer).length;

test('a base history that describes fewer or more layers than it has is lined up before the new entry (BuildKit normalizeLayersAndHistory)', () => {
  const diffId = `sha256:${'f'.repeat(64)}` as const;
  const base = (history: ImageConfig['history'] | null, layers: number): ImageConfig =>
    ({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ids(layers) }, ...(history === undefined ? {} : { history }) }) as ImageConfig;
  // No history at all (AWS Lambda's bases had null), a short one, one with an empty_layer entry.
  for (const [history, layers] of [[undefined, 2], [null, 2], [[{ created_by: 'ADD a' }], 3], [[{ created_by: 'ENV x', empty_layer: true }, { created_by: 'ADD a' }], 2]] as const) {
    const out = newImageConfig(base(history as ImageConfig['history'], layers), { os: 'linux', architecture: 'amd64' }, { createdBy: 'artificer: COPY /app/' }, { mtime: 0 }, diffId);
    assert.equal(out.rootfs.diff_ids.length, layers + 1);
    assert.equal(described(out.history), layers + 1, JSON.stringify(out.history));
    assert.equal(out.history!.at(-1)!.created_by, 'artificer: COPY /app/', 'the new entry describes the new layer');
    assert.ok(out.history!.slice(0, -1).every((h) => h.empty_layer || h.created_by || h.comment === UNDESCRIBED_LAYER_COMMENT));
  }
  // Too many: the entries beyond the layers become empty ones, in place.
  const long = alignedHistory([{ created_by: 'a' }, { created_by: 'b', empty_layer: true }, { created_by: 'c' }, { created_by: 'd' }], 2);
  assert.deepEqual(long, [{ created_by: 'a' }, { created_by: 'b', empty_layer: true }, { created_by: 'c' }, { created_by: 'd', empty_layer: true }]);
  // Aligned already: untouched.
  const fine = [{ created_by: 'a' }, { created_by: 'ENV', empty_layer: true }, { created_by: 'b' }];
  assert.deepEqual(alignedHistory(fine, 2), fine);
});

test('the base\'s ONBUILD triggers are not carried into the new image (docker build clears them once run)', () => {
  const out = applyContainerConfig({ Cmd: ['sh'], OnBuild: ['COPY . /usr/src/app', 'RUN npm install'] }, {});
  assert.equal('OnBuild' in out, false);
  assert.deepEqual(out.Cmd, ['sh']);
});

test('an arm config without the variant its index entry names gets it (crane validate refuses the mismatch)', () => {
  const armBase = { architecture: 'arm', os: 'linux', rootfs: { type: 'layers', diff_ids: ids(1) }, history: [{ created_by: 'ADD' }] } as ImageConfig;
  const diffId = `sha256:${'e'.repeat(64)}` as const;
  assert.equal(newImageConfig(armBase, { os: 'linux', architecture: 'arm', variant: 'v7' }, {}, { mtime: 0 }, diffId).variant, 'v7');
  const v6 = newImageConfig({ ...armBase, variant: 'v6' } as ImageConfig, { os: 'linux', architecture: 'arm', variant: 'v7' }, {}, { mtime: 0 }, diffId);
  assert.equal(v6.variant, 'v6', "a config's own variant is kept");
  assert.equal('variant' in newImageConfig({ ...armBase, architecture: 'amd64' } as ImageConfig, { os: 'linux', architecture: 'amd64' }, {}, { mtime: 0 }, diffId), false);
});

test("an empty entrypoint (--entrypoint '') clears the base's entrypoint and its cmd, as Dockerfile's ENTRYPOINT [] does", () => {
  const nginx = { Entrypoint: ['/docker-entrypoint.sh'], Cmd: ['nginx', '-g', 'daemon off;'], Env: [alpinePath] };
  assert.deepEqual(applyContainerConfig(nginx, { entrypoint: [] }), { Entrypoint: [], Env: [alpinePath] });
  assert.deepEqual(applyContainerConfig(nginx, { entrypoint: [], cmd: ['/server'] }), { Entrypoint: [], Cmd: ['/server'], Env: [alpinePath] });
});

test("an empty cmd (--cmd '[]') clears the base's cmd instead of keeping it", () => {
  assert.deepEqual(applyContainerConfig({ Cmd: ['sh'], Env: [alpinePath] }, { cmd: [] }), { Cmd: [], Env: [alpinePath] });
});

test('env on scratch: a base without Env gets the variables', () => {
  const diffId = `sha256:${'d'.repeat(64)}` as const;
  const out = newImageConfig(undefined, { os: 'linux', architecture: 'amd64' }, { env: [['A', '1'], ['PATH', '/bin']] }, { mtime: 0 }, diffId);
  assert.deepEqual(out.config?.Env, ['A=1', 'PATH=/bin']);
  assert.deepEqual(applyContainerConfig({ Cmd: ['sh'] }, { env: [['A', '1']] }), { Cmd: ['sh'], Env: ['A=1'] });
});
