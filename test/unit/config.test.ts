import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyContainerConfig, createdAt, mergeEnv, newImageConfig } from '../../src/build/config.ts';
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
