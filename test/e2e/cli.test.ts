// The CLI end to end: the exact seed flags against the real docker-registry, the image pulled
// back by skopeo, unpacked by umoci and run by runc; assertions on what the container prints.
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { artificer } from '../support/cli.ts';
import { BASE_PATH, craneConfig, craneManifest, pushBusyboxBase, type PushedImage } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { pullAndRun, runDockerArchive, runLayout } from '../support/runc.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

const SERVER = `#!/bin/sh
echo "server says hello"
echo "LOGLEVEL=$LOGLEVEL ENVIRONMENT=$ENVIRONMENT BASE_VAR=$BASE_VAR"
echo "PATH=$PATH"
cat /conf/app.conf
`;

let registry: RunningRegistry;
let work: TempDir;
let dockerBase: PushedImage;
let ociBase: PushedImage;
let multiBase: PushedImage;

async function makeInputs(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'conf'), { recursive: true });
  await writeFile(path.join(dir, 'server-binary'), SERVER);
  await chmod(path.join(dir, 'server-binary'), 0o755);
  await writeFile(path.join(dir, 'conf', 'app.conf'), 'conf: loaded\n');
}

const digestLine = /^127\.0\.0\.1:\d+\/[a-z0-9/._-]+@sha256:[a-f0-9]{64}\n$/;

before(async () => {
  registry = await startRegistry();
  work = await tempDir('cli-e2e');
  await makeInputs(work.path);
  [dockerBase, ociBase, multiBase] = await Promise.all([
    pushBusyboxBase(registry.host, { repository: 'base/busybox', tag: 'docker', format: 'docker' }),
    pushBusyboxBase(registry.host, { repository: 'base/busybox', tag: 'oci', format: 'oci' }),
    pushBusyboxBase(registry.host, { repository: 'base/multi', tag: '1', format: 'oci', platforms: ['linux/amd64', 'linux/arm64'] }),
  ]);
});

after(async () => {
  await registry?.stop();
  await work?.remove();
});

describe('the seed command', () => {
  test('pushes an image that runs under runc, prints its CMD output, with merged ENV', async () => {
    const target = `${registry.host}/app/server:1`;
    const r = await artificer(
      ['--baseimage', dockerBase.reference, '--files', 'server-binary', '--files', 'conf/', '--cmd', '/server-binary', '--target', target, '--env', 'LOGLEVEL=1', '--env', 'ENVIRONMENT=prod'],
      { cwd: work.path },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, digestLine, 'stdout is exactly one line REGISTRY/REPO@sha256:…');
    assert.ok(r.stdout.startsWith(`${registry.host}/app/server@sha256:`));

    const run = await pullAndRun(target);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(
      run.stdout,
      ['server says hello', 'LOGLEVEL=1 ENVIRONMENT=prod BASE_VAR=from-base', BASE_PATH, 'conf: loaded', ''].join('\n'),
    );

    // The docker family is kept, the base layer is reused, not rebuilt.
    const manifest = await craneManifest(target);
    assert.equal(manifest.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    const layers = manifest.layers as Array<{ mediaType: string; digest: string }>;
    const baseManifest = await craneManifest(dockerBase.reference);
    assert.deepEqual(layers.slice(0, -1), baseManifest.layers);
    assert.equal(layers.at(-1)!.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    const config = await craneConfig(target);
    assert.equal(config.created, '1970-01-01T00:00:00Z');
    assert.equal((config.history as unknown[]).length, ((await craneConfig(dockerBase.reference)).history as unknown[]).length + 1);
  });

  test('the short forms do the same, and the same inputs give the same digest', async () => {
    const args = (t: string) => ['-b', dockerBase.reference, '-f', 'server-binary', '-f', 'conf/', '-c', '/server-binary', '-t', `${registry.host}/app/${t}:1`, '-e', 'LOGLEVEL=1', '-e', 'ENVIRONMENT=prod'];
    const first = await artificer(args('short'), { cwd: work.path });
    assert.equal(first.code, 0, first.stderr);
    // Different mtimes and owners on disk must not change the image.
    await utimes(path.join(work.path, 'server-binary'), new Date('2001-02-03'), new Date('2001-02-03'));
    await utimes(path.join(work.path, 'conf', 'app.conf'), new Date(), new Date());
    await chown(path.join(work.path, 'conf', 'app.conf'), 1234, 5678);
    const second = await artificer(args('short2'), { cwd: work.path });
    assert.equal(second.code, 0, second.stderr);
    const digest = (out: string) => out.trim().split('@')[1];
    assert.equal(digest(first.stdout), digest(second.stdout));
    await chown(path.join(work.path, 'conf', 'app.conf'), 0, 0);
  });

  test('however the paths are spelled, from whichever directory: the same digest, no host path in the image', async () => {
    const target = (t: string) => `${registry.host}/app/spelled:${t}`;
    const runs = [
      await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-f', 'conf/', '-t', target('a')], { cwd: work.path }),
      await artificer(['-b', dockerBase.reference, '-f', './server-binary', '-f', 'conf', '-t', target('b')], { cwd: work.path }),
      await artificer(['-b', dockerBase.reference, '-f', path.join(work.path, 'server-binary'), '-f', `${work.path}/conf/`, '-t', target('c')], { cwd: '/' }),
      await artificer(['-b', dockerBase.reference, '-f', 'server-binary:/.', '-f', 'conf:conf/', '-t', target('d')], { cwd: work.path }),
      await artificer(['-b', dockerBase.reference, '-f', 'server-binary:/', '-f', 'conf/:/conf', '-t', target('e')], { cwd: work.path }),
    ];
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const digests = new Set(runs.map((r) => r.stdout.trim().split('@')[1]));
    assert.equal(digests.size, 1, [...digests].join(' '));
    const history = (await craneConfig(target('c'))).history as Array<{ created_by?: string }>;
    assert.equal(history.at(-1)?.created_by, 'artificer: COPY /server-binary /conf/');
  });

  test("-f . adds the directory's contents at /: the same digest whatever the checkout is called", async () => {
    const checkouts = [path.join(work.path, 'checkout-a'), path.join(work.path, 'ci-job-1234')];
    for (const dir of checkouts) await makeInputs(dir);
    const target = (t: string) => `${registry.host}/app/dot:${t}`;
    const runs = [
      await artificer(['-b', dockerBase.reference, '-f', '.', '-c', '/server-binary', '-t', target('a')], { cwd: checkouts[0] }),
      await artificer(['-b', dockerBase.reference, '-f', '.', '-c', '/server-binary', '-t', target('b')], { cwd: checkouts[1] }),
      await artificer(['-b', dockerBase.reference, '-f', 'ci-job-1234/.', '-c', '/server-binary', '-t', target('c')], { cwd: work.path }),
    ];
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    assert.equal(new Set(runs.map((r) => r.stdout.trim().split('@')[1])).size, 1, runs.map((r) => r.stdout).join(''));
    const run = await pullAndRun(target('a'));
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^server says hello\n[^]*conf: loaded\n$/);
    const history = (await craneConfig(target('a'))).history as Array<{ created_by?: string }>;
    assert.equal(history.at(-1)?.created_by, 'artificer: COPY /');

    const srv = `${registry.host}/app/dot:srv`;
    const r = await artificer(['-b', dockerBase.reference, '-f', 'checkout-a/.:/srv/', '-t', srv], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const ls = await pullAndRun(srv, { args: ['ls', '/srv', '/srv/conf'] });
    assert.equal(ls.stdout, '/srv:\nconf\nserver-binary\n\n/srv/conf:\napp.conf\n', ls.stderr);
  });
});

describe('OCI bases, platforms and outputs', () => {
  test('an OCI base gives an OCI image with base annotations', async () => {
    const target = `${registry.host}/app/oci:1`;
    const r = await artificer(['-b', ociBase.reference, '-f', 'server-binary', '-f', 'conf/', '-c', '/server-binary', '-t', target, '-a', 'org.example.note=hi'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const manifest = await craneManifest(target);
    assert.equal(manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(manifest.annotations, {
      'org.opencontainers.image.base.name': ociBase.reference,
      'org.opencontainers.image.base.digest': ociBase.digest,
      'org.example.note': 'hi',
    });
    const run = await pullAndRun(target);
    assert.match(run.stdout, /^server says hello\n/);
  });

  test('--platform all on an index pushes an index with every platform', async () => {
    const target = `${registry.host}/app/multi:1`;
    const r = await artificer(['-b', multiBase.reference, '-f', 'server-binary', '-c', '/server-binary', '-t', target, '--platform', 'all'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const index = await craneManifest(target);
    assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
    const platforms = (index.manifests as Array<{ platform: { os: string; architecture: string } }>).map((m) => `${m.platform.os}/${m.platform.architecture}`);
    assert.deepEqual(platforms, ['linux/amd64', 'linux/arm64']);
    assert.equal((await craneConfig(target, { platform: 'linux/arm64' })).architecture, 'arm64');
    const run = await pullAndRun(target, { platform: 'linux/amd64', args: ['/server-binary'] });
    assert.match(run.stdout, /^server says hello\n/);
  });

  test('a Docker manifest list base gives a Docker manifest list', async () => {
    const list = await pushBusyboxBase(registry.host, { repository: 'base/list', tag: '1', format: 'docker', platforms: ['linux/amd64', 'linux/arm64'] });
    const target = `${registry.host}/app/list:1`;
    const r = await artificer(['-b', list.reference, '-f', 'server-binary', '-c', '/server-binary', '-t', target, '-p', 'linux/arm64,linux/amd64'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const index = await craneManifest(target);
    assert.equal(index.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    const children = index.manifests as Array<{ mediaType: string; platform: { architecture: string } }>;
    assert.deepEqual(children.map((m) => [m.mediaType, m.platform.architecture]), [
      ['application/vnd.docker.distribution.manifest.v2+json', 'arm64'],
      ['application/vnd.docker.distribution.manifest.v2+json', 'amd64'],
    ]);
  });

  test('one platform out of an index gives a single manifest, not an index', async () => {
    const target = `${registry.host}/app/one:1`;
    const r = await artificer(['-b', multiBase.reference, '-f', 'server-binary', '-t', target, '-p', 'linux/arm64'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const manifest = await craneManifest(target);
    assert.equal(manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal((await craneConfig(target)).architecture, 'arm64');
    assert.deepEqual((manifest.annotations as Record<string, string>)['org.opencontainers.image.base.digest'], multiBase.manifests['linux/arm64']);
  });

  test('a platform the base lacks is an error listing the ones it has, and nothing is pushed', async () => {
    const target = `${registry.host}/app/s390x:1`;
    const r = await artificer(['-b', multiBase.reference, '-f', 'server-binary', '-t', target, '--platform', 'linux/s390x'], { cwd: work.path });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /has no linux\/s390x variant; available: linux\/amd64, linux\/arm64/);
    assert.equal(r.stdout, '');
    await assert.rejects(craneManifest(target));
  });

  test('--output oci:DIR and tarball:FILE are runnable by independent tools', async () => {
    const layout = path.join(work.path, 'layout');
    const tarball = path.join(work.path, 'image.tar');
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-f', 'conf/', '-c', '/server-binary', '-e', 'LOGLEVEL=2', '-t', `${registry.host}/app/out:1`, '-o', `oci:${layout}`, '-o', `tarball:${tarball}`], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const fromLayout = await runLayout(layout, '1');
    assert.equal(fromLayout.code, 0, fromLayout.stderr);
    assert.match(fromLayout.stdout, /LOGLEVEL=2/);
    const fromTarball = await runDockerArchive(tarball);
    assert.equal(fromTarball.code, 0, fromTarball.stderr);
    assert.match(fromTarball.stdout, /LOGLEVEL=2/);
  });

  test('--output oci:DIR records every tag: skopeo finds the one image under each', async () => {
    const layout = path.join(work.path, 'layout-tags');
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-f', 'conf/', '-c', '/server-binary', '-t', `${registry.host}/app/layouttags:1`, '--tag', 'latest', '-t', `${registry.host}/other/layouttags:2`, '-o', `oci:${layout}`], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const { exec, tool } = await import('../support/tools.ts');
    const digests = new Set<string>();
    for (const tag of ['1', 'latest', '2']) {
      const inspected = JSON.parse((await exec(tool('skopeo'), ['inspect', `oci:${layout}:${tag}`])).stdout) as { Digest: string };
      digests.add(inspected.Digest);
    }
    assert.equal(digests.size, 1, [...digests].join(' '));
    const run = await runLayout(layout, 'latest');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^server says hello\n/);
  });

  test('-o oci:DIR alone on a Docker base: --digest-file and the -v log name the image in the layout', async () => {
    // The layout holds the OCI twin of the Docker image (other media types, another digest); the
    // digest reported was the Docker manifest's, which is in no output when nothing is pushed.
    const layout = path.join(work.path, 'layout-only');
    const digestFile = path.join(work.path, 'layout-only.digest');
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-o', `oci:${layout}`, '--digest-file', digestFile, '-v'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '');
    const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    assert.equal(index.manifests.length, 1);
    const inLayout = index.manifests[0]!.digest;
    assert.equal(await readFile(digestFile, 'utf8'), `${inLayout}\n`);
    assert.match(r.stderr, new RegExp(`written digest=${inLayout}\n`));
  });

  test("the base's directories stay as they are: /tmp keeps its sticky bit, a symlinked directory is followed", async () => {
    // A first image whose /opt is a symlink to usr/local (a merged-usr base has /bin -> usr/bin).
    const links = path.join(work.path, 'links');
    await mkdir(links, { recursive: true });
    await symlink('usr/local', path.join(links, 'opt'));
    const linked = `${registry.host}/app/linked:1`;
    const first = await artificer(['-b', dockerBase.reference, '-f', 'links/:/', '-t', linked], { cwd: work.path });
    assert.equal(first.code, 0, first.stderr);
    // Files added below both, as someone else: neither /tmp nor /opt may change.
    const target = `${registry.host}/app/onbase:1`;
    const r = await artificer(['-b', linked, '-f', 'server-binary:/tmp/sub/server', '-f', 'server-binary:/opt/bin/server', '--chown', '1000:1000', '-t', target], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const run = await pullAndRun(target, { args: ['sh', '-c', 'stat -c "%a %u %n" /tmp /usr/local /usr/local/bin; readlink /opt; ls /usr/local/bin'] });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, '1777 0 /tmp\n755 0 /usr/local\n755 0 /usr/local/bin\nusr/local\nserver\n');
  });

  test('--tag with full references and no --target pushes to those references', async () => {
    const layout = path.join(work.path, 'tagonly');
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-o', `oci:${layout}`, '--tag', `${registry.host}/app/tagonly:1`, '--tag', `${registry.host}/other/tagonly:2`], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.split('@')[0]).sort(), [`${registry.host}/app/tagonly`, `${registry.host}/other/tagonly`]);
    await craneManifest(`${registry.host}/app/tagonly:1`);
    await craneManifest(`${registry.host}/other/tagonly:2`);
  });

  test('-t repeated, as in docker build: every tag is pushed, one stdout line per repository', async () => {
    const [sha, latest, other] = [`${registry.host}/app/multitag:abc123`, `${registry.host}/app/multitag:latest`, `${registry.host}/other/multitag:1`];
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-t', sha, '-t', latest, '-t', other], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.map((l) => l.split('@')[0]), [`${registry.host}/app/multitag`, `${registry.host}/other/multitag`]);
    const digest = lines[0]!.split('@')[1]!;
    const { exec, tool } = await import('../support/tools.ts');
    for (const ref of [sha, latest, other]) assert.equal((await exec(tool('crane'), ['digest', ref])).stdout.trim(), digest, ref);
  });

  test('--chown with a uid beyond ustar (OpenShift-style): the files belong to it in the container', async () => {
    const target = `${registry.host}/app/biguid:1`;
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '--chown', '1000680000:0', '-t', target], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const run = await pullAndRun(target, { args: ['stat', '-c', '%u:%g', '/server-binary'] });
    assert.equal(run.stdout, '1000680000:0\n', run.stderr);
  });

  test('scratch: no base at all', async () => {
    const target = `${registry.host}/app/scratch:1`;
    const r = await artificer(['-b', 'scratch', '-f', 'conf/', '-t', target], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const manifest = await craneManifest(target);
    assert.equal((manifest.layers as unknown[]).length, 1);
    const config = await craneConfig(target);
    assert.equal(config.os, 'linux');
    assert.equal(config.architecture, 'amd64');
  });
});

describe('bad input: a specific message, a non-zero exit, nothing pushed', () => {
  const cases: Array<[string, (t: string) => string[], number, RegExp]> = [
    ['bad reference', (t) => ['-b', 'Not/Valid', '-f', 'server-binary', '-t', t], 2, /invalid image reference "Not\/Valid"/],
    ['base tag not found', (t) => ['-b', `${registry.host}/base/busybox:nope`, '-f', 'server-binary', '-t', t], 1, /base\/busybox:nope not found/],
    ['missing file', (t) => ['-b', dockerBase.reference, '-f', 'no-such-file', '-t', t], 2, /no-such-file.*no such file or directory/],
    ['bad --env', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '-e', 'NOEQUALS', '-t', t], 2, /--env "NOEQUALS": "NOEQUALS" must be KEY=VALUE/],
    ['bad --expose', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '--expose', 'web', '-t', t], 2, /--expose "web"/],
    ['bad --chown', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '--chown', 'root', '-t', t], 2, /--chown "root"/],
    ['a relative --workdir, which runc refuses', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '-w', 'app', '-t', t], 2, /--workdir "app": "app" must be an absolute path/],
    // Outputs are written after the tags: one that cannot be written is refused before any request.
    ['a digest file in a missing directory', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '--digest-file', 'outs/nodir/d', '-t', t], 2, /--digest-file outs\/nodir\/d: its directory \S+\/outs\/nodir does not exist; nothing was pushed/],
    ['a tarball in a missing directory', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '-o', 'tarball:outs/nodir/x.tar', '-t', t], 2, /--output tarball:outs\/nodir\/x\.tar: its directory \S+\/outs\/nodir does not exist/],
    ['a tarball that is a directory', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '-o', 'tarball:conf', '-t', t], 2, /--output tarball:conf: \S+\/conf is a directory/],
    ['an OCI layout below a file', (t) => ['-b', dockerBase.reference, '-f', 'conf/', '-o', 'oci:server-binary/sub/layout', '-t', t], 2, /--output oci:server-binary\/sub\/layout: it cannot be created: \S+\/server-binary is not a directory/],
    ['a tarball on stdout', (t) => ['-b', dockerBase.reference, '-f', 'server-binary', '-o', 'tarball:-', '-t', t], 2, /--output tarball:-: stdout carries the pushed digests/],
    ['an output inside the files', (t) => ['-b', dockerBase.reference, '-f', '.', '-o', 'oci:out/layout', '-t', t], 2, /--output oci:\S+out\/layout is inside the files to add \(\S+\): the image would contain its own output/],
  ];
  for (const [name, args, code, message] of cases) {
    test(name, async () => {
      const target = `${registry.host}/bad/${name.replace(/[^a-z]+/g, '-')}:1`;
      const r = await artificer(args(target), { cwd: work.path });
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace for a user mistake');
      assert.equal(r.stdout, '');
      await assert.rejects(craneManifest(target), 'the target tag does not exist');
    });
  }

  test('a source that is a symlink loop, with a destination: a source error, not an internal one', async () => {
    await symlink('loop', path.join(work.path, 'loop')).catch(() => {});
    const r = await artificer(['-b', 'scratch', '-f', 'loop:/x', '-o', `oci:${path.join(work.path, 'loop-out')}`], { cwd: work.path });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /loop: too many levels of symbolic links/);
    assert.doesNotMatch(r.stderr, /internal error/);
  });

  test('an output that cannot be written', async () => {
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-o', 'tarball:/nonexistent-dir/image.tar'], { cwd: work.path });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--output tarball:\/nonexistent-dir\/image.tar: its directory \/nonexistent-dir does not exist; nothing was pushed/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  test('a FIFO among the files', async () => {
    const dir = path.join(work.path, 'withfifo');
    await mkdir(dir, { recursive: true });
    const { exec } = await import('../support/tools.ts');
    await exec('mkfifo', [path.join(dir, 'pipe')]);
    const target = `${registry.host}/bad/fifo:1`;
    const r = await artificer(['-b', dockerBase.reference, '-f', 'withfifo/', '-t', target], { cwd: work.path });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /withfifo\/pipe.*FIFO/);
    await assert.rejects(craneManifest(target));
  });

  test('registry down: retried, then a clear error', async () => {
    const { freePort } = await import('../support/ports.ts');
    const port = await freePort();
    const r = await artificer(['-b', dockerBase.reference, '-f', 'server-binary', '-t', `127.0.0.1:${port}/x/y:1`], { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(r.stderr, /ECONNREFUSED|connection refused|connect/i);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});
