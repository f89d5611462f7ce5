import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { anonymous, chainCredentials, dockerConfigCredentials, dockerConfigPath, staticCredentials } from '../../src/registry/credentials.ts';

let dir: string;
let binDir: string;
let env: NodeJS.ProcessEnv;

// A real credential helper implementing the docker-credential-helpers protocol: server URL on
// stdin, JSON on stdout, "credentials not found" + exit 1 when it has nothing.
const HELPER = `#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
echo "$server" >> "$HELPER_LOG"
case "$server" in
  helper.example.com) echo '{"ServerURL":"helper.example.com","Username":"hu","Secret":"hs"}' ;;
  token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"refresh-1"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hubuser","Secret":"hubpass"}' ;;
  broken.example.com) echo "boom: internal" >&2; exit 3 ;;
  leaky.example.com) echo '{"Username":"lu","Secret":"stdout-secret-42"}'; printf 'keychain locked\nsecond line stderr-secret-43\n' >&2; exit 4 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'artificer-creds-'));
  binDir = join(dir, 'bin');
  await mkdir(binDir);
  await writeFile(join(binDir, 'docker-credential-test'), HELPER);
  await chmod(join(binDir, 'docker-credential-test'), 0o755);
  env = { DOCKER_CONFIG: join(dir, 'cfg'), PATH: `${binDir}:${process.env.PATH}`, HELPER_LOG: join(dir, 'helper.log') };
  await mkdir(join(dir, 'cfg'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(config: unknown): Promise<string> {
  const path = join(dir, 'cfg', 'config.json');
  await writeFile(path, JSON.stringify(config));
  return path;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('dockerConfigPath honours DOCKER_CONFIG, else ~/.docker', () => {
  assert.equal(dockerConfigPath({ DOCKER_CONFIG: '/x/y' }), '/x/y/config.json');
  assert.equal(dockerConfigPath({ HOME: '/home/u' }), '/home/u/.docker/config.json');
});

test('no config file: no credentials', async () => {
  const p = dockerConfigCredentials({ env: { DOCKER_CONFIG: join(dir, 'does-not-exist') } });
  assert.equal(await p.resolve('gcr.io'), undefined);
});

test('auths: base64 user:pass (with a colon in the password), identitytoken, registrytoken, URL keys, Docker Hub', async () => {
  const path = await writeConfig({
    auths: {
      'reg.example.com': { auth: b64('alice:pa:ss') },
      'https://url.example.com/v1/': { auth: b64('bob:pw') },
      'id.example.com': { auth: b64('<token>:'), identitytoken: 'refresh-xyz' },
      'rt.example.com': { registrytoken: 'bearer-123' },
      'https://index.docker.io/v1/': { auth: b64('hub:hubpw') },
      'localhost:5000': { username: 'local', password: 'lpw' },
      'empty.example.com': {},
    },
  });
  const p = dockerConfigCredentials({ env });
  const source = `docker config ${path}`;
  assert.deepEqual(await p.resolve('reg.example.com'), { credential: { username: 'alice', password: 'pa:ss' }, source });
  assert.deepEqual(await p.resolve('url.example.com'), { credential: { username: 'bob', password: 'pw' }, source });
  assert.deepEqual(await p.resolve('id.example.com'), { credential: { identityToken: 'refresh-xyz' }, source });
  assert.deepEqual(await p.resolve('rt.example.com'), { credential: { registryToken: 'bearer-123' }, source });
  assert.deepEqual(await p.resolve('docker.io'), { credential: { username: 'hub', password: 'hubpw' }, source });
  assert.deepEqual(await p.resolve('index.docker.io'), { credential: { username: 'hub', password: 'hubpw' }, source });
  assert.deepEqual(await p.resolve('localhost:5000'), { credential: { username: 'local', password: 'lpw' }, source });
  assert.equal(await p.resolve('empty.example.com'), undefined);
  assert.equal(await p.resolve('other.example.com'), undefined);
  assert.equal(await p.resolve('localhost:5001'), undefined);
});

test('credHelpers run docker-credential-NAME get with the host on stdin; <token> means identity token', async () => {
  await writeConfig({
    auths: { 'helper.example.com': { auth: b64('ignored:ignored') } },
    credHelpers: { 'helper.example.com': 'test', 'token.example.com': 'test', 'nothing.example.com': 'test', 'broken.example.com': 'test', 'missing.example.com': 'no-such-helper' },
  });
  const p = dockerConfigCredentials({ env });
  const source = 'credential helper docker-credential-test';
  assert.deepEqual(await p.resolve('helper.example.com'), { credential: { username: 'hu', password: 'hs' }, source });
  assert.deepEqual(await p.resolve('token.example.com'), { credential: { identityToken: 'refresh-1' }, source });
  assert.equal(await p.resolve('nothing.example.com'), undefined);
  await assert.rejects(p.resolve('broken.example.com'), (err: Error) => {
    assert.match(err.message, /credential helper docker-credential-test failed for broken\.example\.com \(exit 3\): boom: internal/);
    return true;
  });
  await assert.rejects(p.resolve('missing.example.com'), /cannot run credential helper docker-credential-no-such-helper: ENOENT/);
});

test('a failing credential helper is reported by the first line of its stderr only: its stdout may hold the secret', async () => {
  await writeConfig({ credHelpers: { 'leaky.example.com': 'test' } });
  await assert.rejects(dockerConfigCredentials({ env }).resolve('leaky.example.com'), (err: Error) => {
    assert.equal(err.message, 'credential helper docker-credential-test failed for leaky.example.com (exit 4): keychain locked');
    return true;
  });
});

test('credsStore is used for every registry; Docker Hub is asked as https://index.docker.io/v1/', async () => {
  await writeConfig({ credsStore: 'test', auths: { 'fallback.example.com': { auth: b64('f:fp') } } });
  const p = dockerConfigCredentials({ env });
  assert.deepEqual(await p.resolve('docker.io'), { credential: { username: 'hubuser', password: 'hubpass' }, source: 'credential helper docker-credential-test' });
  // The store has nothing: auths still answer (docker's own fallback).
  assert.deepEqual((await p.resolve('fallback.example.com'))?.credential, { username: 'f', password: 'fp' });
  const { readFile } = await import('node:fs/promises');
  assert.match(await readFile(env.HELPER_LOG!, 'utf8'), /^https:\/\/index\.docker\.io\/v1\/$/m);
});

test('a malformed config is an error naming the file, not its content', async () => {
  const path = await writeConfig({});
  await writeFile(path, '{"auths": {"x": {"auth": "c2VjcmV0"}');
  await assert.rejects(dockerConfigCredentials({ env }).resolve('x'), (err: Error) => {
    assert.match(err.message, new RegExp(`cannot read docker config ${path.replace(/[.]/g, '\\.')}: invalid JSON`));
    assert.ok(!err.message.includes('c2VjcmV0'));
    return true;
  });
});

test('chainCredentials: first provider with an answer wins; anonymous has none', async () => {
  const a = staticCredentials('a.io', { username: 'a', password: '1' }, 'A');
  const b = staticCredentials('b.io', { username: 'b', password: '2' }, 'B');
  const chain = chainCredentials(anonymous, a, b, staticCredentials('a.io', { username: 'z', password: 'z' }, 'Z'));
  assert.equal((await chain.resolve('a.io'))?.source, 'A');
  assert.equal((await chain.resolve('b.io'))?.source, 'B');
  assert.equal(await chain.resolve('c.io'), undefined);
  assert.equal(await anonymous.resolve('a.io'), undefined);
});

test('a credential helper name that is not a plain name is refused: "a/b" ran ./docker-credential-a/b from the current directory', async () => {
  // What spawn does with a name holding "/": no PATH lookup, a path from the current directory
  // (docker-credential-x/../../anything reaches any file once docker-credential-x exists).
  const work = join(dir, 'checkout');
  await mkdir(join(work, 'docker-credential-x'), { recursive: true });
  const ran = join(dir, 'ran');
  await writeFile(join(work, 'docker-credential-x', 'evil'), `#!/bin/sh\necho ran > "${ran}"\necho '{"Username":"u","Secret":"s"}'\n`);
  await chmod(join(work, 'docker-credential-x', 'evil'), 0o755);
  const cwd = process.cwd();
  process.chdir(work);
  try {
    for (const config of [{ credsStore: 'x/evil' }, { credHelpers: { 'r.example.com': 'x/evil' } }, { credHelpers: { 'r.example.com': '..' } }, { credsStore: { name: 'x' } }]) {
      const path = await writeConfig(config);
      await assert.rejects(dockerConfigCredentials({ env }).resolve('r.example.com'), (err: Error) => {
        assert.match(err.message, new RegExp(`^docker config ${path.replace(/[.]/g, '\\.')}: credential helper ".*" is not a helper name \\(letters, digits, "\\.", "_" and "-": docker-credential-NAME is looked up on PATH\\)$`));
        return true;
      }, JSON.stringify(config));
    }
    await assert.rejects(readFile(ran), { code: 'ENOENT' }, 'the file was not run');
  } finally {
    process.chdir(cwd);
  }
});

test('a malformed config leaves no part of its text in the error\'s causes either (-vv prints the cause)', async () => {
  // An auth value without its quotes: V8's SyntaxError quotes the text around the mistake.
  const path = await writeConfig({});
  await writeFile(path, '{"auths": {"r.example.com": {"auth": dXNlcjpzdXBlcnNlY3JldHBhc3N3b3Jk}}}');
  await assert.rejects(dockerConfigCredentials({ env }).resolve('r.example.com'), (err: Error) => {
    assert.match(err.message, /: invalid JSON/);
    for (let e: unknown = err; e instanceof Error; e = e.cause) assert.ok(!e.message.includes('dXNlcjpz'), `a cause quotes the config: ${e.message}`);
    return true;
  });
});
