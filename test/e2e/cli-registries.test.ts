// The CLI against registries with auth, across registries, through faults, and with --spec.
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { artificer } from '../support/cli.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { craneManifest, pushBusyboxBase, type PushedImage } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { pullAndRun } from '../support/runc.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';
import { exec, tool } from '../support/tools.ts';

let plain: RunningRegistry;
let basic: RunningRegistry;
let token: RunningRegistry;
let proxy: FaultProxy;
let work: TempDir;
let base: PushedImage;

async function dockerConfig(name: string, auths: Record<string, { username: string; password: string }>): Promise<string> {
  const dir = path.join(work.path, `docker-config-${name}`);
  await mkdir(dir, { recursive: true });
  const entries = Object.fromEntries(Object.entries(auths).map(([host, c]) => [host, { auth: Buffer.from(`${c.username}:${c.password}`).toString('base64') }]));
  await writeFile(path.join(dir, 'config.json'), JSON.stringify({ auths: entries }));
  return dir;
}

before(async () => {
  [plain, basic, token, work] = await Promise.all([startRegistry(), startRegistry({ auth: 'basic' }), startRegistry({ auth: 'token' }), tempDir('cli-reg')]);
  proxy = await startFaultProxy(plain.url);
  base = await pushBusyboxBase(plain.host, { repository: 'base/busybox', tag: '1', format: 'oci' });
  await writeFile(path.join(work.path, 'hello'), '#!/bin/sh\necho "hello $WHO"\n');
  await chmod(path.join(work.path, 'hello'), 0o755);
});

after(async () => {
  await Promise.all([plain?.stop(), basic?.stop(), token?.stop(), proxy?.stop()]);
  await work?.remove();
});

const craneDigest = async (ref: string): Promise<string> => (await exec(tool('crane'), ['digest', ref])).stdout.trim();

const build = (target: string, extra: string[] = []) => ['-b', base.reference, '-f', 'hello', '-c', '/hello', '-e', 'WHO=world', '-t', target, ...extra];

describe('auth', () => {
  test('basic auth: credentials from DOCKER_CONFIG; the base streams across registries', async () => {
    const target = `${basic.host}/team/app:1`;
    const cfg = await dockerConfig('basic', { [basic.host]: { username: basic.username!, password: basic.password! } });
    const r = await artificer(build(target), { cwd: work.path, env: { DOCKER_CONFIG: cfg } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith(`${basic.host}/team/app@sha256:`));
    const run = await pullAndRun(target, { creds: { username: basic.username!, password: basic.password! } });
    assert.equal(run.stdout, 'hello world\n');
  });

  test('basic auth without credentials: says which registry and that it went anonymous', async () => {
    const r = await artificer(build(`${basic.host}/team/anon:1`), { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`unauthorized to push.* on ${basic.host.replace(/\./g, '\\.')} \\(credentials tried: anonymous\\)`));
  });

  test('a base on a registry that needs credentials, pulled without any', async () => {
    const privateBase = await pushBusyboxBase(basic.host, { repository: 'private/base', format: 'docker', auth: { username: basic.username!, password: basic.password! } });
    const r = await artificer(['-b', privateBase.reference, '-f', 'hello', '-t', `${plain.host}/from/private:1`], { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`unauthorized to pull.* on ${basic.host.replace(/\./g, '\\.')} \\(credentials tried: anonymous\\)`));
    assert.equal(r.stdout, '');
  });

  test('a wrong password: names the docker config tried, never the secret', async () => {
    const cfg = await dockerConfig('wrong', { [basic.host]: { username: basic.username!, password: 'not-the-password-s3cret' } });
    const r = await artificer(build(`${basic.host}/team/wrong:1`, ['-vv']), { cwd: work.path, env: { DOCKER_CONFIG: cfg } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unauthorized/);
    assert.ok(r.stderr.includes(path.join(cfg, 'config.json')), r.stderr);
    assert.doesNotMatch(r.stderr, /not-the-password-s3cret|bm90LXRoZS1wYXNzd29yZC1zM2NyZXQ/);
    assert.doesNotMatch(r.stderr, /Basic [A-Za-z0-9+/=]{8,}/);
  });

  test('token auth: a bearer token from the token server, no token in the logs', async () => {
    const target = `${token.host}/team/app:1`;
    const cfg = await dockerConfig('token', { [token.host]: { username: token.username!, password: token.password! } });
    const r = await artificer(build(target, ['-vv']), { cwd: work.path, env: { DOCKER_CONFIG: cfg } });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /eyJ[A-Za-z0-9_-]{10,}/, 'no JWT in debug output');
    assert.ok(!r.stderr.includes(token.password!));
    const run = await pullAndRun(target, { creds: { username: token.username!, password: token.password! } });
    assert.equal(run.stdout, 'hello world\n');
  });
});

describe('a plain-HTTP registry that is not on loopback', () => {
  // Loopback registries get plain HTTP anyway, so the registry is reached through this host's
  // own non-loopback address, by a TCP relay to it.
  const address = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
  let relay: Server | undefined;
  let host = '';
  before(async () => {
    if (!address) return;
    const [, port] = plain.host.split(':');
    relay = createServer((socket) => {
      const upstream = connect(Number(port), '127.0.0.1');
      socket.on('error', () => upstream.destroy()).pipe(upstream).on('error', () => socket.destroy()).pipe(socket);
    });
    await new Promise<void>((resolve) => relay!.listen(0, address, resolve));
    host = `${address}:${(relay.address() as AddressInfo).port}`;
  });
  after(() => relay?.close());

  test('spoken to in TLS: the error says it speaks plain HTTP and names the flag, without the OpenSSL dump', { skip: !address && 'no non-loopback IPv4 address here' }, async () => {
    const started = Date.now();
    const r = await artificer(build(`${host}/insecure/app:1`), { cwd: work.path });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`cannot reach registry ${host.replace(/\./g, '\\.')} .*the registry seems to speak plain HTTP, not HTTPS; if so, pass --insecure-registry ${host.replace(/\./g, '\\.')}`));
    assert.doesNotMatch(r.stderr, /tls_validate_record_header|deps\/openssl/);
    assert.ok(Date.now() - started < 5000, 'not retried: the answer will not change');
  });

  test('--insecure-registry http://HOST:PORT is the same as HOST:PORT', { skip: !address && 'no non-loopback IPv4 address here' }, async () => {
    const r = await artificer(build(`${host}/insecure/app:1`, ['--insecure-registry', `http://${host}`]), { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.split('@')[0], `${host}/insecure/app`);
    const run = await pullAndRun(`${plain.host}/insecure/app:1`);
    assert.equal(run.stdout, 'hello world\n');
  });
});

describe('through a faulty registry', () => {
  test('503s and a reset mid-upload are retried; the push succeeds', async () => {
    proxy.reset();
    proxy.failNext(1, { status: 503, method: 'PUT', match: /\/manifests\// });
    proxy.failNext(1, { status: 503, method: 'HEAD', match: /\/blobs\// });
    proxy.failNext(1, { reset: true, afterBytes: 10, method: 'PATCH' });
    const target = `${proxy.host}/faulty/app:1`;
    const r = await artificer(build(target), { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(proxy.pendingFaults(), 0, 'every fault fired');
    const run = await pullAndRun(`${plain.host}/faulty/app:1`);
    assert.equal(run.stdout, 'hello world\n');
  });

  test('a registry that keeps failing: a clear error after the retries, no tag', async () => {
    proxy.reset();
    proxy.failNext(100, { status: 500, method: 'PUT', match: /\/manifests\// });
    const target = `${proxy.host}/faulty/never:1`;
    const r = await artificer(build(target), { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /tagging .*faulty\/never:1/);
    assert.match(r.stderr, /500/);
    proxy.reset();
    await assert.rejects(craneManifest(`${plain.host}/faulty/never:1`));
  });

  test('a tag that fails after another was written: the error says which tags moved, to what', async () => {
    proxy.reset();
    proxy.failNext(1, { status: 400, method: 'PUT', match: /\/manifests\/2$/ });
    const r = await artificer(build(`${proxy.host}/faulty/partial:1`, ['--tag', '2']), { cwd: work.path });
    assert.equal(r.code, 1, r.stderr);
    const moved = /only some tags were pushed \((\S+) now point at (sha256:[a-f0-9]{64})\): tagging \S+faulty\/partial:2/.exec(r.stderr);
    assert.ok(moved, r.stderr);
    assert.equal(moved[1], `${proxy.host}/faulty/partial:1`);
    assert.equal(r.stdout, '', 'no image is reported');
    proxy.reset();
    assert.equal(await craneDigest(`${plain.host}/faulty/partial:1`), moved[2]);
    await assert.rejects(craneManifest(`${plain.host}/faulty/partial:2`));
  });

  test('Ctrl-C while tagging: the tag set is finished, never left half moved', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.ts');
    proxy.reset();
    proxy.failNext(1, { delayMs: 1500, method: 'PUT', match: /\/manifests\/1$/ });
    const child = spawn(process.execPath, [BIN, ...build(`${proxy.host}/faulty/atomic:1`, ['--tag', '2'])], {
      cwd: work.path,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    for (let i = 0; i < 200 && !proxy.requests.some((q) => q.method === 'PUT' && /\/manifests\/1$/.test(q.path)); i++) await new Promise((r) => setTimeout(r, 25));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 130, stderr);
    proxy.reset();
    const [one, two] = await Promise.all([craneDigest(`${plain.host}/faulty/atomic:1`), craneDigest(`${plain.host}/faulty/atomic:2`)]);
    assert.equal(one, two, `both tags were written, to the same image: ${stderr}`);
  });

  test('same registry: base layers are mounted, not re-uploaded', async () => {
    proxy.reset();
    const viaProxy = base.reference.replace(plain.host, proxy.host);
    const r = await artificer(['-b', viaProxy, '-f', 'hello', '-t', `${proxy.host}/mounted/app:1`], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const mounts = proxy.requests.filter((q) => q.method === 'POST' && /[?&]mount=sha256/.test(q.path));
    assert.ok(mounts.length >= 1, 'a cross-repository mount was asked');
    assert.ok(mounts.every((m) => m.status === 201), 'and the registry mounted');
    const gets = proxy.requests.filter((q) => q.method === 'GET' && /\/blobs\/sha256:/.test(q.path));
    assert.equal(gets.length, 1, `only the base config is read, no base layer: ${JSON.stringify(gets)}`);
  });
});

describe('the new layer and the base at once', () => {
  // The base's manifest is held back at the proxy: its config can be asked for only once the
  // manifest has come, so where the new layer's PATCH falls in the request log shows whether the
  // upload waited for the base.
  test('the new layer is uploaded while the base is still being resolved', async () => {
    proxy.reset();
    proxy.failNext(1, { delayMs: 3000, method: 'GET', match: /\/base\/busybox\/manifests\/1$/ });
    const r = await artificer(['-b', `${proxy.host}/base/busybox:1`, '-f', 'hello', '-c', '/hello', '-e', 'WHO=early', '-t', `${proxy.host}/overlap/app:1`], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const log = proxy.requests.map((q) => `${q.method} ${q.path}`);
    const patch = log.findIndex((l) => /^PATCH \/v2\/overlap\/app\/blobs\/uploads\//.test(l));
    const config = log.findIndex((l) => /^GET \/v2\/base\/busybox\/blobs\/sha256:/.test(l));
    assert.ok(patch >= 0 && config >= 0, log.join('\n'));
    assert.ok(patch < config, `the layer's PATCH came before the base's config was asked for:\n${log.join('\n')}`);
    const run = await pullAndRun(`${plain.host}/overlap/app:1`);
    assert.equal(run.stdout, 'hello early\n');
  });

  test('a base that does not exist stops the new layer: the base is named, no tag is written', async () => {
    proxy.reset();
    proxy.failNext(1, { delayMs: 1500, method: 'GET', match: /\/base\/busybox\/manifests\/nope$/ });
    const r = await artificer(['-b', `${proxy.host}/base/busybox:nope`, '-f', 'hello', '-t', `${proxy.host}/overlap/none:1`], { cwd: work.path });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /base\/busybox:nope not found/);
    assert.doesNotMatch(r.stderr, /internal error|abort/i);
    assert.ok(proxy.requests.some((q) => q.method === 'POST' && q.path.startsWith('/v2/overlap/none/blobs/uploads/')), 'the upload had started');
    assert.ok(!proxy.requests.some((q) => q.method === 'PUT' && q.path.includes('/manifests/')), 'no manifest was put');
    proxy.reset();
    await assert.rejects(craneManifest(`${plain.host}/overlap/none:1`));
  });
});

describe('--spec, tags, digest file', () => {
  test('a spec file builds like the flags, -t overrides its target, --tag and --digest-file work', async () => {
    const dir = path.join(work.path, 'spec');
    await mkdir(path.join(dir, 'bin'), { recursive: true });
    await writeFile(path.join(dir, 'bin', 'hello'), '#!/bin/sh\necho "spec says $WHO"\n');
    await chmod(path.join(dir, 'bin', 'hello'), 0o755);
    await writeFile(
      path.join(dir, 'artificer.json'),
      JSON.stringify({ base: base.reference, target: 'registry.invalid/never/used:1', files: [{ from: 'bin/hello', to: '/usr/local/bin/hello' }], cmd: ['hello'], env: { WHO: 'spec' } }),
    );
    const target = `${plain.host}/spec/app:1`;
    const digestFile = path.join(work.path, 'digest.txt');
    const r = await artificer(['--spec', 'spec/artificer.json', '-t', target, '--tag', 'latest', '--digest-file', digestFile], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const digest = (await readFile(digestFile, 'utf8')).trim();
    assert.equal(r.stdout, `${plain.host}/spec/app@${digest}\n`);
    const run = await pullAndRun(`${plain.host}/spec/app:latest`);
    assert.equal(run.stdout, 'spec says spec\n');
  });

  test('a spec with a bundle and a mode: re-packed on the fly, as the function does', async () => {
    const dir = path.join(work.path, 'bundle-spec');
    await mkdir(path.join(dir, 'dist', 'bin'), { recursive: true });
    await writeFile(path.join(dir, 'dist', 'bin', 'app'), '#!/bin/sh\necho "bundled app, $(stat -c %a /opt/tool)"\n');
    await chmod(path.join(dir, 'dist', 'bin', 'app'), 0o755);
    await writeFile(path.join(dir, 'tool'), 'tool\n');
    const { exec } = await import('../support/tools.ts');
    await exec('tar', ['-czf', path.join(dir, 'dist.tar.gz'), '-C', path.join(dir, 'dist'), '.']);
    await writeFile(
      path.join(dir, 'app.artificer.json'),
      JSON.stringify({ base: base.reference, target: `${plain.host}/spec/bundle:1`, files: [{ bundle: 'dist.tar.gz', to: '/app/' }, { from: 'tool', to: '/opt/tool', mode: '0700' }], cmd: ['/app/bin/app'] }),
    );
    const r = await artificer(['--spec', 'bundle-spec/app.artificer.json'], { cwd: work.path });
    assert.equal(r.code, 0, r.stderr);
    const run = await pullAndRun(`${plain.host}/spec/bundle:1`);
    assert.equal(run.stdout, 'bundled app, 700\n');
  });

  test('a spec naming a missing bundle', async () => {
    await writeFile(path.join(work.path, 'nobundle.json'), JSON.stringify({ base: base.reference, target: `${plain.host}/spec/nobundle:1`, files: [{ bundle: 'missing.tar.gz' }] }));
    const r = await artificer(['--spec', 'nobundle.json'], { cwd: work.path });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /missing\.tar\.gz: no such file or directory/);
    await assert.rejects(craneManifest(`${plain.host}/spec/nobundle:1`));
  });

  test('a spec is checked whole before any request: a missing file, a path out of its folder, a bundle that is a directory', async () => {
    const dir = path.join(work.path, 'checked');
    await mkdir(path.join(dir, 'adir.tar'), { recursive: true });
    await writeFile(path.join(dir, 'a'), 'a');
    await writeFile(path.join(work.path, 'secret'), 'TOPSECRET');
    await symlink('../secret', path.join(dir, 'tok'));
    const cases: Array<[unknown[], RegExp]> = [
      [['a', 'nope'], /nope: no such file or directory/],
      [['a', 'tok'], /tok: leads outside the spec's folder .*: a spec's paths must stay inside/],
      [['a', { bundle: 'adir.tar' }], /adir\.tar: (is a directory|is not a file)/],
    ];
    for (const [files, message] of cases) {
      await writeFile(path.join(dir, 'artificer.json'), JSON.stringify({ base: base.reference.replace(plain.host, proxy.host), target: `${proxy.host}/spec/checked:1`, files }));
      proxy.reset();
      const r = await artificer(['--spec', 'checked/artificer.json'], { cwd: work.path });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /internal error/);
      assert.deepEqual(proxy.requests.filter((q) => q.method !== 'GET' && q.method !== 'HEAD'), [], 'nothing was pushed');
    }
  });

  test('a spec with a typo is refused with the field named', async () => {
    await writeFile(path.join(work.path, 'typo.json'), JSON.stringify({ base: base.reference, target: `${plain.host}/x/y:1`, files: [], entrypont: ['/x'] }));
    const r = await artificer(['--spec', 'typo.json'], { cwd: work.path });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /entrypont/);
  });
});

describe('Ctrl-C', () => {
  test('SIGINT during the upload stops the build: exit 130, nothing printed, no tag', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.ts');
    proxy.reset();
    proxy.failNext(1, { delayMs: 10_000, method: 'PATCH' });
    const child = spawn(process.execPath, [BIN, ...build(`${proxy.host}/interrupted/app:1`)], {
      cwd: work.path,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    // Wait until the upload is stalled in the proxy, then interrupt.
    for (let i = 0; i < 100 && !proxy.requests.some((r) => r.method === 'PATCH'); i++) await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 130, stderr);
    assert.ok(Date.now() - started < 5000, 'stopped promptly, not after the stalled request');
    assert.equal(stdout, '');
    assert.match(stderr, /SIGINT: stopping/);
    proxy.reset();
    await assert.rejects(craneManifest(`${plain.host}/interrupted/app:1`));
  });
});

describe('SIGTERM', () => {
  test('SIGTERM during the upload stops the build with 143 (128 + 15), not the 130 of Ctrl-C', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.ts');
    proxy.reset();
    proxy.failNext(1, { delayMs: 10_000, method: 'PATCH' });
    const child = spawn(process.execPath, [BIN, ...build(`${proxy.host}/terminated/app:1`)], {
      cwd: work.path,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    for (let i = 0; i < 100 && !proxy.requests.some((r) => r.method === 'PATCH'); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 143, stderr);
    assert.match(stderr, /SIGTERM: stopping/);
    proxy.reset();
    await assert.rejects(craneManifest(`${plain.host}/terminated/app:1`));
  });
});

describe('a registry that lies', () => {
  test('a manifest digest other than the one sent is an error, not a success', async () => {
    proxy.reset();
    proxy.failNext(1, { method: 'PUT', match: /\/manifests\//, responseHeaders: { 'docker-content-digest': `sha256:${'0'.repeat(64)}` } });
    const r = await artificer(build(`${proxy.host}/liar/app:1`), { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /digest mismatch: expected sha256:[a-f0-9]{64}, registry has sha256:0{64}/);
    assert.equal(r.stdout, '', 'no image is reported');
  });

  test('a blob upload answered with another digest is an error', async () => {
    proxy.reset();
    proxy.failNext(1, { method: 'PUT', match: /\/blobs\/uploads\//, responseHeaders: { 'docker-content-digest': `sha256:${'1'.repeat(64)}` } });
    const r = await artificer(build(`${proxy.host}/liar/blob:1`), { cwd: work.path });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /sha256:1{64}/);
    assert.equal(r.stdout, '');
    await assert.rejects(craneManifest(`${plain.host}/liar/blob:1`), 'no tag was written');
  });
});
