import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseOptions } from '../../src/cli/options.ts';
import { resolveTags } from '../../src/spec/request.ts';
import { UsageError } from '../../src/errors.ts';
import { parseReference } from '../../src/reference/reference.ts';

const seed = ['--baseimage', 'alpine:3.20', '--files', 'server-binary', '--files', 'conf/', '--cmd', '/server-binary', '--target', 'localhost:5000/app:1', '--env', 'LOGLEVEL=1', '--env', 'ENVIRONMENT=prod'];

test('the seed command parses into typed values', () => {
  const o = parseOptions(seed, {});
  assert.equal(o.command, 'build');
  assert.equal(String(o.base), 'docker.io/library/alpine:3.20');
  assert.deepEqual(o.files, ['server-binary', 'conf/']);
  assert.deepEqual(o.cmd, ['/server-binary']);
  assert.deepEqual(o.env, [['LOGLEVEL', '1'], ['ENVIRONMENT', 'prod']]);
  assert.equal(String(o.target), 'localhost:5000/app:1');
  assert.equal(o.mtime, 0);
  assert.equal(o.platforms, 'default');
});

test('short flags are the same as long ones', () => {
  const short = parseOptions(['-b', 'alpine:3.20', '-f', 'server-binary', '-f', 'conf/', '-c', '/server-binary', '-t', 'localhost:5000/app:1', '-e', 'LOGLEVEL=1', '-e', 'ENVIRONMENT=prod'], {});
  const long = parseOptions(seed, {});
  const plain = (o: ReturnType<typeof parseOptions>) => JSON.stringify({ ...o, base: String(o.base), target: String(o.target) });
  assert.equal(plain(short), plain(long));
});

const good: Array<[string, string[], Record<string, string>, (o: ReturnType<typeof parseOptions>) => void]> = [
  ['JSON cmd', ['-c', '["/bin/sh","-c","echo $HOME"]'], {}, (o) => assert.deepEqual(o.cmd, ['/bin/sh', '-c', 'echo $HOME'])],
  ['JSON cmd after white space (a YAML block, a line break in a CI file)', ['-c', '\n  ["/server", "--port", "80"]'], {}, (o) => assert.deepEqual(o.cmd, ['/server', '--port', '80'])],
  ['shell-split cmd, no shell', ['-c', `/server --name 'a b' "c\\"d"`], {}, (o) => assert.deepEqual(o.cmd, ['/server', '--name', 'a b', 'c"d'])],
  ['entrypoint', ['--entrypoint', '/server --x'], {}, (o) => assert.deepEqual(o.entrypoint, ['/server', '--x'])],
  ['env value with =', ['-e', 'A=b=c'], {}, (o) => assert.deepEqual(o.env, [['A', 'b=c']])],
  ['empty env value', ['-e', 'A='], {}, (o) => assert.deepEqual(o.env, [['A', '']])],
  ['expose normalises', ['--expose', '8080', '--expose', '53/UDP'], {}, (o) => assert.deepEqual(o.exposedPorts, ['8080/tcp', '53/udp'])],
  ['chown', ['--chown', '65532:65533'], {}, (o) => assert.deepEqual(o.chown, { uid: 65532, gid: 65533 })],
  ['platforms', ['-p', 'linux/amd64,linux/arm64', '-p', 'linux/arm/v7'], {}, (o) =>
    assert.deepEqual(o.platforms, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm', variant: 'v7' }])],
  ['platforms in upper case, once each', ['-p', 'LINUX/AMD64,linux/amd64', '-p', 'Linux/Arm64'], {}, (o) =>
    assert.deepEqual(o.platforms, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }])],
  ['platform all', ['-p', 'all'], {}, (o) => assert.equal(o.platforms, 'all')],
  ['--tag REF alone is where to push', ['-b', 'alpine', '-f', 'x', '--tag', 'reg.example/app:1'], {}, (o) => assert.equal(String(o.tags[0]), 'reg.example/app:1')],
  ["--entrypoint '' clears it, as docker run's does", ['--entrypoint', ''], {}, (o) => assert.deepEqual(o.entrypoint, [])],
  ['platforms once each', ['-p', 'linux/amd64,linux/amd64', '-p', 'linux/arm64', '-p', 'linux/amd64'], {}, (o) =>
    assert.deepEqual(o.platforms, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }])],
  ['SOURCE_DATE_EPOCH', [], { SOURCE_DATE_EPOCH: '1700000000' }, (o) => assert.equal(o.mtime, 1700000000)],
  ['outputs', ['-o', 'oci:./img', '-o', 'tarball:/tmp/a.tar'], {}, (o) => assert.deepEqual([o.ociLayout, o.tarball], ['./img', '/tmp/a.tar'])],
  ['labels, annotations', ['-l', 'a=1', '-a', 'org.opencontainers.image.source=x'], {}, (o) => assert.deepEqual([o.labels, o.annotations], [{ a: '1' }, { 'org.opencontainers.image.source': 'x' }])],
  ['verbosity', ['-v', '-v'], {}, (o) => assert.equal(o.verbosity, 2)],
  ['scratch', ['-b', 'scratch'], {}, (o) => assert.equal(o.base, 'scratch')],
  ['workdir, user', ['-w', '/app', '-u', '65532:65532'], {}, (o) => assert.deepEqual([o.workdir, o.user], ['/app', '65532:65532'])],
  ['insecure registries', ['--insecure-registry', 'reg.lan:5000'], {}, (o) => assert.deepEqual(o.insecureRegistries, ['reg.lan:5000'])],
  ['an insecure registry written as an http:// URL', ['--insecure-registry', 'http://reg.lan:5000', '--insecure-registry', 'HTTP://10.0.0.7/'], {}, (o) => assert.deepEqual(o.insecureRegistries, ['reg.lan:5000', '10.0.0.7'])],
  ['-t repeated, as docker build takes it: the first is the target, the others are pushed like --tag REF', ['-t', 'localhost:5000/app:latest', '--tag', 'v1', '-t', 'other:5000/x:2'], {}, (o) => {
    assert.equal(String(o.target), 'localhost:5000/app:1');
    assert.deepEqual(o.tags.map(String), ['localhost:5000/app:latest', 'other:5000/x:2', 'v1']);
    assert.deepEqual(resolveTags(o.target!, o.tags).map(String), ['localhost:5000/app:latest', 'other:5000/x:2', 'localhost:5000/app:v1']);
  }],
];

for (const [name, extra, env, check] of good) {
  test(`parses: ${name}`, () => {
    const argv = extra.includes('-b') ? ['-t', 'localhost:5000/app:1', ...extra] : ['-b', 'alpine:3.20', '-t', 'localhost:5000/app:1', ...extra];
    check(parseOptions(argv, env));
  });
}

const bad: Array<[string, string[], Record<string, string>, RegExp]> = [
  ['no base', ['-t', 'localhost:5000/a'], {}, /missing --baseimage/],
  ['no target', ['-b', 'alpine'], {}, /missing --target/],
  ['bad reference', ['-b', 'Alpine', '-t', 'localhost:5000/a'], {}, /--baseimage: invalid image reference "Alpine"/],
  ['target by digest', ['-b', 'alpine', '-t', `localhost:5000/a@sha256:${'a'.repeat(64)}`], {}, /name a tag, not a digest/],
  ['env without =', ['-b', 'alpine', '-t', 'l:5000/a', '-e', 'LOGLEVEL'], {}, /--env "LOGLEVEL": "LOGLEVEL" must be KEY=VALUE/],
  ['env bad key', ['-b', 'alpine', '-t', 'l:5000/a', '-e', 'A B=2'], {}, /"A B" is not a valid variable name/],
  ['expose junk', ['-b', 'alpine', '-t', 'l:5000/a', '--expose', 'http'], {}, /--expose "http": "http" is not a port: expected PORT/],
  ['expose range', ['-b', 'alpine', '-t', 'l:5000/a', '--expose', '70000'], {}, /PORT 1-65535/],
  ['chown names', ['-b', 'alpine', '-t', 'l:5000/a', '--chown', 'app:app'], {}, /--chown "app:app": "app:app" must be numeric "uid:gid"/],
  ['cmd bad JSON', ['-b', 'alpine', '-t', 'l:5000/a', '-c', '["/a",'], {}, /--cmd: starts with "\[" but is not a JSON array/],
  ['cmd JSON not strings', ['-b', 'alpine', '-t', 'l:5000/a', '-c', '[1,2]'], {}, /array of strings/],
  ['cmd unterminated quote', ['-b', 'alpine', '-t', 'l:5000/a', '-c', '/a "b'], {}, /unterminated double quote/],
  ['platform junk', ['-b', 'alpine', '-t', 'l:5000/a', '-p', 'amd64'], {}, /invalid platform "amd64"/],
  ['platform all and more', ['-b', 'alpine', '-t', 'l:5000/a', '-p', 'all', '-p', 'linux/amd64'], {}, /cannot be combined/],
  ['platform all and more, comma-separated', ['-b', 'alpine', '-t', 'l:5000/a', '-p', 'linux/amd64,all'], {}, /--platform all cannot be combined with named platforms/],
  ['a tarball on stdout', ['-b', 'alpine', '-t', 'l:5000/a', '-o', 'tarball:-'], {}, /--output tarball:-: stdout carries the pushed digests, not a tarball; name a file/],
  ['an https:// insecure registry', ['-b', 'alpine', '-t', 'l:5000/a', '--insecure-registry', 'https://reg.lan:5000'], {}, /--insecure-registry "https:\/\/reg.lan:5000": only plain http:\/\/ can be named/],
  ['an insecure registry with a path', ['-b', 'alpine', '-t', 'l:5000/a', '--insecure-registry', 'http://reg.lan:5000/v2/'], {}, /--insecure-registry "http:\/\/reg.lan:5000\/v2\/": not a registry host; expected HOST or HOST:PORT/],
  ['an insecure registry with credentials', ['-b', 'alpine', '-t', 'l:5000/a', '--insecure-registry', 'u:p@reg.lan'], {}, /not a registry host/],
  ['output junk', ['-b', 'alpine', '-o', 'dir:/x'], {}, /expected oci:DIR or tarball:FILE/],
  ['two OCI layouts', ['-b', 'alpine', '-o', 'oci:a', '-o', 'oci:b'], {}, /^--output oci: given twice$/],
  ['two tarballs', ['-b', 'alpine', '-o', 'tarball:a.tar', '-o', 'tarball:b.tar'], {}, /^--output tarball: given twice$/],
  ['unknown flag', ['-b', 'alpine', '-t', 'l:5000/a', '--frobnicate'], {}, /Unknown option '--frobnicate'.*artificer --help/],
  ['positional', ['-b', 'alpine', '-t', 'l:5000/a', 'extra'], {}, /Unexpected argument 'extra'/],
  ['bad SOURCE_DATE_EPOCH', ['-b', 'alpine', '-t', 'l:5000/a'], { SOURCE_DATE_EPOCH: 'yesterday' }, /SOURCE_DATE_EPOCH="yesterday"/],
  ['spec with build flags', ['--spec', 'a.json', '-b', 'alpine', '-e', 'A=1'], {}, /--spec defines the image; remove --baseimage, --env/],
  ['bare tag without target', ['-b', 'alpine', '-o', 'oci:x', '--tag', 'v1'], {}, /needs --target/],
  ['bad tag', ['-b', 'alpine', '-t', 'l:5000/a', '--tag', 'has space'], {}, /--tag "has space"/],
  ['an empty --cmd', ['-b', 'alpine', '-t', 'l:5000/a', '-c', ' '], {}, /--cmd " ": empty command/],
  ['a digest as --tag', ['-b', 'alpine', '-t', 'l:5000/a', '--tag', `l:5000/b@sha256:${'a'.repeat(64)}`], {}, /--tag l:5000\/b@sha256:a+: name a tag, not a digest/],
  ['SOURCE_DATE_EPOCH past what tar holds', ['-b', 'alpine', '-t', 'l:5000/a'], { SOURCE_DATE_EPOCH: '2147483648' }, /SOURCE_DATE_EPOCH="2147483648": .*at most 2147483647 \(2038-01-19T03:14:07Z/],
  ['a uid over 32 bits', ['-b', 'alpine', '-t', 'l:5000/a', '--chown', '4294967296:0'], {}, /--chown/],
  ['concurrency', ['-b', 'alpine', '-t', 'l:5000/a', '-j', '0'], {}, /--concurrency "0"/],
  ['concurrency above 64', ['-b', 'alpine', '-t', 'l:5000/a', '-j', '65'], {}, /--concurrency "65": expected a whole number from 1 to 64/],
  // The spec's rules (src/spec/values.ts): runc refuses a relative cwd, an empty user means nothing.
  ['a relative --workdir', ['-b', 'alpine', '-t', 'l:5000/a', '-w', 'app'], {}, /^--workdir "app": "app" must be an absolute path/],
  ['an empty --workdir', ['-b', 'alpine', '-t', 'l:5000/a', '-w', ''], {}, /^--workdir "": must not be empty/],
  ['an empty --user', ['-b', 'alpine', '-t', 'l:5000/a', '-u', ''], {}, /^--user "": must not be empty/],
  ['a second -t by digest', ['-b', 'alpine', '-t', 'l:5000/a', '-t', `l:5000/b@sha256:${'a'.repeat(64)}`], {}, /--target l:5000\/b@sha256:a+: name a tag, not a digest/],
  // A flag that takes one value is refused when given twice, not "the last one wins".
  ...(
    [
      ['-b', 'alpine', '--baseimage'],
      ['-c', '/x', '--cmd'],
      ['--entrypoint', '/x', '--entrypoint'],
      ['-w', '/x', '--workdir'],
      ['-u', '1', '--user'],
      ['--chown', '1:1', '--chown'],
      ['--digest-file', 'd', '--digest-file'],
      ['-j', '2', '--concurrency'],
      ['-s', 'a.json', '--spec'],
    ] as const
  ).map(([flag, val, long]): [string, string[], Record<string, string>, RegExp] => [
    `${flag} twice`,
    [...(flag === '-b' ? [] : ['-b', 'alpine']), '-t', 'l:5000/a', flag, val, flag, val],
    {},
    new RegExp(`^${long}${flag === long ? '' : ` \\(${flag}\\)`} is given 2 times; it takes one value`),
  ]),
  ['-b and --baseimage together', ['-b', 'alpine', '--baseimage', 'busybox', '-t', 'l:5000/a'], {}, /^--baseimage \(-b\) is given 2 times/],
];

for (const [name, argv, env, message] of bad) {
  test(`rejects: ${name}`, () => {
    assert.throws(() => parseOptions(argv, env), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${name}: ${String(err)}`);
      assert.equal(err.code, 'ARTIFICER_USAGE');
      assert.match(err.message, message);
      return true;
    });
  });
}

test('--tag: bare tags join the target repository, full references stand alone, duplicates drop', () => {
  const target = parseReference('localhost:5000/app:1');
  const tags = resolveTags(target, ['latest', '1', parseReference('other:5000/x:y'), 'latest']);
  assert.deepEqual(tags.map(String), ['localhost:5000/app:latest', 'other:5000/x:y']);
  // A spec's tags are all strings: a full reference among them must not become a bare tag.
  assert.deepEqual(resolveTags(target, ['v2', 'other:5000/x:z']).map(String), ['localhost:5000/app:v2', 'other:5000/x:z']);
});

test('help and version need nothing else', () => {
  assert.equal(parseOptions(['--help'], {}).command, 'help');
  assert.equal(parseOptions(['-h'], {}).command, 'help');
  assert.equal(parseOptions(['--version'], {}).command, 'version');
});

test('--help documents every flag, long and short', async () => {
  const { FLAGS } = await import('../../src/cli/options.ts');
  const { HELP } = await import('../../src/cli/help.ts');
  for (const [name, def] of Object.entries(FLAGS)) {
    assert.match(HELP, new RegExp(`--${name}\\b`), `--${name} is in --help`);
    if ('short' in def) assert.match(HELP, new RegExp(`-${def.short}, --${name}\\b`), `-${def.short} is in --help`);
  }
});

test("the README's flag table has every flag, long and short, and no other", async () => {
  const { FLAGS } = await import('../../src/cli/options.ts');
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const table = readme.split('\n').filter((l) => /^\| `-/.test(l)).map((l) => l.split(' | ')[0]!);
  const documented = new Set(table.flatMap((cell) => [...cell.matchAll(/`([^`]*)`/g)].flatMap((m) => m[1]!.split(', ').map((f) => f.split(' ')[0]!))));
  const expected = new Set(Object.entries(FLAGS).flatMap(([name, def]) => [`--${name}`, ...('short' in def ? [`-${def.short}`] : [])]));
  expected.add('-vv');
  assert.deepEqual([...documented].sort(), [...expected].sort());
  for (const [name, def] of Object.entries(FLAGS)) {
    if ('short' in def) assert.ok(table.some((cell) => cell.includes(`\`-${def.short}, --${name}`)), `-${def.short}, --${name} share a row`);
  }
});

test('shell syntax in a command line, and $VAR in an env value, get a warning (nothing runs a shell)', () => {
  const warnings = (...args: string[]) => parseOptions(['-b', 'alpine', '-t', 'r.example/a:1', ...args], {}).warnings;
  const [cmd, ...more] = warnings('-c', 'echo $HOME && ls | wc');
  assert.equal(more.length, 0);
  assert.match(cmd!, /^--cmd: "\$HOME", "&&", "\|" will reach "echo" as plain arguments/);
  assert.ok(cmd!.endsWith(`--cmd '["/bin/sh","-c","echo $HOME && ls | wc"]'`), cmd);
  assert.match(warnings('--entrypoint', 'cd /app; ./run')[0]!, /^--entrypoint: "\/app;" will reach "cd"/);
  assert.match(warnings('-c', 'echo `date`')[0]!, /"`date`"/);
  const [env] = warnings('-e', 'PATH=/opt/bin:$PATH', '-e', 'A=${B}');
  assert.match(env!, /^--env PATH=\/opt\/bin:\$PATH: kept as written, nothing expands \$PATH here .*the base's PATH is replaced, not extended/);
  assert.match(warnings('-e', 'A=${B}')[0]!, /nothing expands \$\{B\} here/);
  // What means what it says: plain commands, the JSON form (the shell named), literal dollars.
  for (const args of [['-c', '/server --port 80'], ['-c', '["/bin/sh","-c","echo $HOME && ls"]'], ['-e', 'PRICE=5$'], ['-e', 'A=b'], ['-c', 'printf %s a&b']]) {
    assert.deepEqual(warnings(...args), [], args.join(' '));
  }
});
