// Proves the real-parts harness on its own, with no artificer code involved: the busybox bases
// are pushed in each format, read back by crane, and run by skopeo → umoci → runc.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import path from 'node:path';
import { BASE_ENV, BASE_PATH, MEDIA_TYPES, craneConfig, craneManifest, pushBusyboxBase } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { pullAndRun, runDockerArchive, runLayout } from '../support/runc.ts';
import { tempDir } from '../support/tmp.ts';
import { ExecError, exec, tool } from '../support/tools.ts';

describe('tools', () => {
  test('tool() resolves installed binaries and names setup.sh for missing ones', () => {
    assert.match(tool('crane'), /\/crane$/);
    assert.match(tool('runc'), /\/runc$/);
    assert.throws(() => tool('no-such-tool-artificer'), /no-such-tool-artificer.*run scripts\/setup\.sh/s);
  });

  test('exec() resolves with output and rejects with the command line and stderr', async () => {
    assert.deepEqual(await exec('sh', ['-c', 'echo out; echo err >&2']), { stdout: 'out\n', stderr: 'err\n', code: 0 });
    await assert.rejects(exec('sh', ['-c', 'echo broken >&2; exit 7']), (err: unknown) => {
      assert.ok(err instanceof ExecError);
      assert.equal(err.code, 7);
      assert.match(err.message, /exited with code 7: sh -c 'echo broken >&2; exit 7'\nbroken/);
      return true;
    });
    assert.equal((await exec('sh', ['-c', 'exit 4'], { allowFailure: true })).code, 4);
    await assert.rejects(exec('/nonexistent/bin', []), /could not be started: \/nonexistent\/bin/);
    assert.equal((await exec('cat', [], { input: 'piped' })).stdout, 'piped');
  });
});

describe('busybox base images', () => {
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
  });

  for (const format of ['docker', 'oci'] as const) {
    test(`${format}: single-platform manifest with base env and cmd, runs under runc`, async () => {
      const base = await pushBusyboxBase(registry.host, { repository: `base/${format}`, tag: 'v1', format });
      assert.equal(base.reference, `${registry.host}/base/${format}:v1`);
      const manifest = await craneManifest(base.reference);
      assert.equal(manifest.mediaType, MEDIA_TYPES[format].manifest);
      const layers = manifest.layers as Array<{ mediaType: string }>;
      assert.deepEqual(layers.map((l) => l.mediaType), [MEDIA_TYPES[format].layer]);
      const config = (await craneConfig(base.reference)) as { os: string; architecture: string; config: { Env: string[]; Cmd: string[] } };
      assert.equal(config.os, 'linux');
      assert.equal(config.architecture, 'amd64');
      assert.deepEqual(config.config.Env, BASE_ENV);
      assert.deepEqual(config.config.Cmd, ['sh']);

      const run = await pullAndRun(base.reference, { args: ['sh', '-c', 'echo hello; env; ls /bin/cat; id'] });
      assert.equal(run.code, 0, run.stderr);
      const lines = run.stdout.split('\n');
      assert.equal(lines[0], 'hello');
      assert.ok(lines.includes(BASE_PATH), run.stdout);
      assert.ok(lines.includes('BASE_VAR=from-base'), run.stdout);
      assert.ok(!lines.includes('TERM=xterm'), 'umoci-added TERM is dropped');
      assert.ok(lines.includes('/bin/cat'));
      assert.ok(lines.includes('uid=0(root) gid=0(root)'), run.stdout);
    });
  }

  test('the image Cmd runs when no args are given, exit codes and env overrides come through', async () => {
    const base = await pushBusyboxBase(registry.host, { repository: 'base/cmd', format: 'oci' });
    const plain = await pullAndRun(base.pinned, {});
    assert.deepEqual(plain.process.args, ['sh']); // sh with stdin closed exits 0 at once
    assert.equal(plain.code, 0);
    const failing = await pullAndRun(base.pinned, { args: ['sh', '-c', 'echo "$BASE_VAR $EXTRA" >&2; exit 42'], env: ['BASE_VAR=over', 'EXTRA=1'] });
    assert.equal(failing.code, 42);
    assert.equal(failing.stderr, 'over 1\n');
  });

  for (const format of ['docker', 'oci'] as const) {
    test(`${format}: multi-platform index selects per platform`, async () => {
      const base = await pushBusyboxBase(registry.host, {
        repository: `multi/${format}`,
        format,
        platforms: ['linux/amd64', 'linux/arm64'],
      });
      const index = (await craneManifest(base.reference)) as { mediaType: string; manifests: Array<{ digest: string; mediaType: string; platform: { os: string; architecture: string } }> };
      assert.equal(index.mediaType, MEDIA_TYPES[format].index);
      assert.deepEqual(
        index.manifests.map((m) => [`${m.platform.os}/${m.platform.architecture}`, m.digest, m.mediaType]),
        Object.entries(base.manifests).map(([p, d]) => [p, d, MEDIA_TYPES[format].manifest]),
      );
      const arm = (await craneConfig(base.reference, { platform: 'linux/arm64' })) as { architecture: string };
      assert.equal(arm.architecture, 'arm64');
      const run = await pullAndRun(base.reference, { args: ['echo', 'from-index'] });
      assert.equal(run.image.architecture, 'amd64');
      assert.equal(run.stdout, 'from-index\n');
      const armRun = await pullAndRun(base.reference, { platform: 'linux/arm64', args: ['true'] });
      assert.equal(armRun.image.architecture, 'arm64'); // same amd64 bytes, so it still runs here
    });
  }

  test('runLayout and runDockerArchive run images already on disk', async () => {
    const base = await pushBusyboxBase(registry.host, { repository: 'base/disk', format: 'docker' });
    await using dir = await tempDir('support-test');
    const layout = path.join(dir.path, 'layout');
    const archive = path.join(dir.path, 'image.tar');
    await exec(tool('skopeo'), ['copy', '--quiet', '--insecure-policy', '--src-tls-verify=false', `docker://${base.reference}`, `oci:${layout}:mytag`]);
    await exec(tool('skopeo'), ['copy', '--quiet', '--insecure-policy', '--src-tls-verify=false', `docker://${base.reference}`, `docker-archive:${archive}:example/busybox:1`]);
    const fromLayout = await runLayout(layout, 'mytag', { args: ['echo', 'layout'] });
    assert.equal(fromLayout.stdout, 'layout\n');
    const fromArchive = await runDockerArchive(archive, { args: ['cat', '/etc/passwd'] });
    assert.match(fromArchive.stdout, /^root:x:0:0:/);
    await assert.rejects(runLayout(layout, 'missing-tag'), /skopeo/);
  });

  test('pushes to and pulls from a basic-auth registry with credentials', async () => {
    const secured = await startRegistry({ auth: 'basic' });
    try {
      const creds = { username: secured.username!, password: secured.password! };
      await assert.rejects(pushBusyboxBase(secured.host, { repository: 'auth/base', format: 'oci' }), /UNAUTHORIZED|401/);
      const base = await pushBusyboxBase(secured.host, { repository: 'auth/base', format: 'oci', auth: creds });
      await assert.rejects(pullAndRun(base.reference), /skopeo/);
      const run = await pullAndRun(base.reference, { creds, args: ['echo', 'authed'] });
      assert.equal(run.stdout, 'authed\n');
    } finally {
      await secured.stop();
    }
  });
});
