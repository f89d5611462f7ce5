import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { InvalidSpecError } from '../../src/errors.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import {
  BUNDLE_FILE_FIELDS,
  parseSpec,
  parseSpecText,
  PATH_FILE_FIELDS,
  SPEC_FIELDS,
  specToRequest,
  splitCommand,
} from '../../src/spec/index.ts';

const minimal = { base: 'debian:12', target: 'registry.example/team/app:1' };

function fails(json: unknown, path: string, message: RegExp): void {
  assert.throws(
    () => parseSpec(json),
    (err: unknown) => {
      assert.ok(err instanceof InvalidSpecError, `expected InvalidSpecError, got ${String(err)}`);
      assert.equal(err.code, 'ARTIFICER_INVALID_SPEC');
      assert.equal(err.path, path);
      assert.match(err.message, message);
      return true;
    },
  );
}

describe('splitCommand', () => {
  const cases: Array<[string, string[]]> = [
    ['node server.js', ['node', 'server.js']],
    ['  a   b\tc\n', ['a', 'b', 'c']],
    [`sh -c 'echo $HOME && ls'`, ['sh', '-c', 'echo $HOME && ls']],
    [`echo "a \\"b\\" \\$x \\n"`, ['echo', 'a "b" $x \\n']],
    [`a\\ b c`, ['a b', 'c']],
    [`x'y'"z"`, ['xyz']],
    [`'' ""`, ['', '']],
    ['a > b | c', ['a', '>', 'b', '|', 'c']],
    // A backslash-newline is a line continuation, outside quotes and inside double quotes (not single).
    ['a\\\nb "c\\\nd" \'e\\\nf\'', ['ab', 'cd', 'e\\\nf']],
    ['', []],
  ];
  for (const [line, words] of cases) {
    test(JSON.stringify(line), () => assert.deepEqual(splitCommand(line), words));
  }
  test('unterminated quotes and trailing backslash are errors', () => {
    assert.throws(() => splitCommand(`echo 'a`), /unterminated single quote/);
    assert.throws(() => splitCommand(`echo "a`), /unterminated double quote/);
    assert.throws(() => splitCommand(`echo a\\`), /trailing backslash/);
  });
});

describe('parseSpec', () => {
  test('a full spec is typed and normalised', () => {
    const spec = parseSpec({
      $schema: '../schema/artificer.schema.json',
      base: 'gcr.io/distroless/nodejs24-debian12',
      target: '127.0.0.1:5000/team/app:v1',
      tags: ['latest', '127.0.0.1:5000/other/app:x'],
      files: ['server.js', { from: 'dist/', to: '/app/', mode: '0755' }, { from: 'run', mode: 493 }, { bundle: 'b.tar.gz', to: '/srv' }, { bundle: 'c.tar' }],
      entrypoint: 'node --enable-source-maps',
      cmd: ['server.js'],
      env: { NODE_ENV: 'production', EMPTY: '' },
      workdir: '/app',
      user: '1000:1000',
      labels: { 'org.opencontainers.image.source': 'x' },
      annotations: { a: 'b' },
      ports: ['8080', '53/UDP', 9090],
      platforms: ['linux/amd64', 'linux/arm/v7'],
      owner: '1000:2000',
    });
    assert.deepEqual(spec.files, [
      { kind: 'path', from: 'server.js', to: '' },
      { kind: 'path', from: 'dist/', to: '/app/', mode: 0o755 },
      { kind: 'path', from: 'run', to: '', mode: 0o755 },
      { kind: 'bundle', bundle: 'b.tar.gz', to: '/srv' },
      { kind: 'bundle', bundle: 'c.tar', to: '/' },
    ]);
    assert.deepEqual(spec.entrypoint, ['node', '--enable-source-maps']);
    assert.deepEqual(spec.env, [['NODE_ENV', 'production'], ['EMPTY', '']]);
    assert.deepEqual(spec.ports, ['8080/tcp', '53/udp', '9090/tcp']);
    assert.deepEqual(spec.platforms, [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm', variant: 'v7' }]);
    assert.deepEqual(spec.owner, { uid: 1000, gid: 2000 });
  });

  test('env as a KEY=VALUE list keeps order and "=" in values', () => {
    const spec = parseSpec({ ...minimal, env: ['A=1', 'B=x=y', 'C='] });
    assert.deepEqual(spec.env, [['A', '1'], ['B', 'x=y'], ['C', '']]);
  });

  test('platforms "all" and base "scratch"', () => {
    const spec = parseSpec({ ...minimal, base: 'scratch', platforms: 'all' });
    assert.equal(spec.platforms, 'all');
    assert.equal(spec.base, 'scratch');
  });

  const bad: Array<[string, unknown, string, RegExp]> = [
    ['not an object', [], '/', /must be a JSON object, not an array/],
    ['unknown top-level field, with a hint', { ...minimal, entryponit: ['x'] }, '/entryponit', /unknown field "entryponit" \(did you mean "entrypoint"\?\)/],
    ['missing base', { target: minimal.target }, '/base', /is required/],
    ['missing target', { base: 'x' }, '/target', /is required/],
    ['bad base reference', { ...minimal, base: 'Debian:12' }, '/base', /must be lowercase/],
    ['target with a digest', { ...minimal, target: `r.example/a@sha256:${'a'.repeat(64)}` }, '/target', /needs a tag/],
    ['scratch target', { ...minimal, target: 'scratch:x/y' }, '/target', /invalid/],
    ['tags not an array', { ...minimal, tags: 'v1' }, '/tags', /must be an array/],
    ['bad tag', { ...minimal, tags: ['v1', 'A B'] }, '/tags/1', /whitespace/],
    ['files not an array', { ...minimal, files: {} }, '/files', /must be an array/],
    ['unknown file field', { ...minimal, files: [{ from: 'a', too: '/x' }] }, '/files/0/too', /unknown field "too" \(did you mean "to"\?\)/],
    ['unknown bundle field', { ...minimal, files: [{ bundle: 'a.tar', mode: 1 }] }, '/files/0/mode', /unknown field "mode"/],
    ['misspelled bundle: the hint looks at both item shapes', { ...minimal, files: [{ bundel: 'dist.tar.gz' }] }, '/files/0/bundel', /^spec \/files\/0\/bundel: unknown field "bundel" \(did you mean "bundle"\?\); a file item is \{"from", "to"\?, "mode"\?\} or \{"bundle", "to"\?\}$/],
    ['misspelled from beside to', { ...minimal, files: [{ form: 'a', to: '/x' }] }, '/files/0/form', /unknown field "form" \(did you mean "from"\?\)/],
    ['a from item names only its own fields', { ...minimal, files: [{ from: 'a', bundel: 'x' }] }, '/files/0/bundel', /unknown field "bundel"; allowed: from, to, mode$/],
    ['from and bundle', { ...minimal, files: [{ from: 'a', bundle: 'a.tar' }] }, '/files/0', /both "from" and "bundle"/],
    ['no from', { ...minimal, files: [{ to: '/x' }] }, '/files/0', /needs "from"/],
    ['absolute from', { ...minimal, files: [{ from: '/etc/passwd' }] }, '/files/0/from', /not absolute/],
    ['.. in from', { ...minimal, files: [{ from: 'a/../../b' }] }, '/files/0/from', /must not contain "\.\."/],
    ['.. in a plain string item', { ...minimal, files: ['../x'] }, '/files/0', /must not contain/],
    ['relative to', { ...minimal, files: [{ from: 'a', to: 'app/' }] }, '/files/0/to', /absolute path in the image/],
    ['.. in to', { ...minimal, files: [{ from: 'a', to: '/app/../../etc' }] }, '/files/0/to', /must not contain "\.\."/],
    ['bad mode string', { ...minimal, files: [{ from: 'a', mode: '0955' }] }, '/files/0/mode', /octal mode/],
    ['mode too big', { ...minimal, files: [{ from: 'a', mode: 0o10000 }] }, '/files/0/mode', /outside/],
    ['bundle extension', { ...minimal, files: [{ bundle: 'a.zip' }] }, '/files/0/bundle', /\.tar, \.tar\.gz or \.tgz/],
    ['entrypoint of numbers', { ...minimal, entrypoint: ['a', 1] }, '/entrypoint/1', /must be a string, not a number/],
    ['cmd unterminated quote', { ...minimal, cmd: "echo 'x" }, '/cmd', /unterminated single quote/],
    ['empty cmd string', { ...minimal, cmd: '  ' }, '/cmd', /must not be empty/],
    ['env value not a string', { ...minimal, env: { A: 1 } }, '/env/A', /must be a string/],
    ['env item without =', { ...minimal, env: ['A'] }, '/env/0', /KEY=VALUE/],
    ['env wrong type', { ...minimal, env: 'A=1' }, '/env', /must be an object/],
    ['relative workdir', { ...minimal, workdir: 'app' }, '/workdir', /absolute/],
    ['empty user', { ...minimal, user: '' }, '/user', /must not be empty/],
    ['labels not strings', { ...minimal, labels: { a: true } }, '/labels/a', /must be a string/],
    ['annotations array', { ...minimal, annotations: [] }, '/annotations', /object of strings/],
    ['port out of range', { ...minimal, ports: ['70000'] }, '/ports/0', /not a port/],
    ['port protocol', { ...minimal, ports: ['80/http'] }, '/ports/0', /not a port/],
    ['platforms empty', { ...minimal, platforms: [] }, '/platforms', /non-empty array/],
    ['platform malformed', { ...minimal, platforms: ['linux'] }, '/platforms/0', /os\/arch/],
    ['owner by name', { ...minimal, owner: 'root:root' }, '/owner', /numeric "uid:gid"/],
    ['field key with a slash is escaped in the path', { ...minimal, 'a/b': 1 }, '/a~1b', /unknown field/],
  ];
  for (const [name, json, path, message] of bad) {
    test(`rejects: ${name}`, () => fails(json, path, message));
  }

  test('the location is prefixed to the path', () => {
    assert.throws(() => parseSpec({ ...minimal, cmd: 1 }, 'gs://b/app/artificer.json'), (err: unknown) => {
      assert.ok(err instanceof InvalidSpecError);
      assert.equal(err.path, 'gs://b/app/artificer.json#/cmd');
      assert.match(err.message, /^spec gs:\/\/b\/app\/artificer\.json#\/cmd: must be an array of strings/);
      return true;
    });
  });

  test('parseSpecText: JSON syntax errors and size limit', () => {
    assert.throws(() => parseSpecText('{"base": ', 'x.json'), /spec x\.json: is not valid JSON/);
    assert.throws(() => parseSpecText(' '.repeat(1024 * 1024 + 1), 'x.json'), /at most 1048576 bytes/);
    assert.equal(parseSpecText('\uFEFF' + JSON.stringify(minimal)).target, minimal.target);
  });
});

describe('specToRequest', () => {
  const files = async function* (): AsyncIterable<LayerEntry> {};
  test('maps every field into the build request', () => {
    const spec = parseSpec({
      ...minimal,
      tags: ['latest', 'v1', 'registry.example/team/app:1', 'other.example/x/y:z'],
      cmd: ['a'],
      entrypoint: ['b'],
      env: ['K=V'],
      workdir: '/w',
      user: 'u',
      labels: { l: '1' },
      annotations: { a: '2' },
      ports: ['80'],
      owner: '1:2',
    });
    const { request, target, tags } = specToRequest(spec, files, { sourceDateEpoch: 1700000000 });
    assert.equal(target.toString(), 'registry.example/team/app:1');
    assert.deepEqual(
      tags.map(String),
      ['registry.example/team/app:latest', 'registry.example/team/app:v1', 'other.example/x/y:z'],
      'bare tags join the target repository; the target itself is not repeated',
    );
    assert.deepEqual(request.outputs.registry.map(String), [target.toString(), ...tags.map(String)]);
    assert.equal(String(request.base), 'docker.io/library/debian:12');
    assert.equal(request.platforms, 'default');
    assert.equal(request.files, files);
    assert.deepEqual(request.layer, { mtime: 1700000000, chown: { uid: 1, gid: 2 } });
    assert.deepEqual(request.config, {
      createdBy: 'artificer --spec',
      env: [['K', 'V']],
      cmd: ['a'],
      entrypoint: ['b'],
      workdir: '/w',
      user: 'u',
      labels: { l: '1' },
      exposedPorts: ['80/tcp'],
    });
    assert.deepEqual(request.annotations, { a: '2' });
  });

  test('an empty entrypoint or cmd ([], as the spec\'s error for "" advises) reaches the request, to clear the base\'s', () => {
    const { request } = specToRequest(parseSpec({ ...minimal, entrypoint: [], cmd: [] }), files);
    assert.deepEqual(request.config.entrypoint, []);
    assert.deepEqual(request.config.cmd, []);
  });

  test('scratch base, defaults', () => {
    const { request } = specToRequest(parseSpec({ ...minimal, base: 'scratch' }), files);
    assert.equal(request.base, 'scratch');
    assert.deepEqual(request.layer, { mtime: 0 });
    assert.deepEqual(request.config, { createdBy: 'artificer --spec' });
    assert.deepEqual(request.annotations, {});
  });
});

describe('schema/artificer.schema.json matches the validator', () => {
  const schema = JSON.parse(readFileSync(new URL('../../schema/artificer.schema.json', import.meta.url), 'utf8'));
  test('top-level properties = SPEC_FIELDS, unknown fields refused', () => {
    assert.deepEqual(Object.keys(schema.properties).sort(), [...SPEC_FIELDS].sort());
    assert.equal(schema.additionalProperties, false);
    assert.deepEqual(schema.required, ['base', 'target']);
  });
  test('file item shapes = PATH_FILE_FIELDS and BUNDLE_FILE_FIELDS', () => {
    const shapes = schema.properties.files.items.oneOf.filter((s: { type?: string }) => s.type === 'object');
    assert.equal(shapes.length, 2);
    const byFirst = Object.fromEntries(shapes.map((s: { required: string[]; properties: object; additionalProperties: boolean }) => {
      assert.equal(s.additionalProperties, false);
      return [s.required[0], Object.keys(s.properties).sort()];
    }));
    assert.deepEqual(byFirst.from, [...PATH_FILE_FIELDS].sort());
    assert.deepEqual(byFirst.bundle, [...BUNDLE_FILE_FIELDS].sort());
  });
  test('the schema\'s patterns agree with the validator on samples', () => {
    const port = new RegExp(schema.properties.ports.items.oneOf[0].pattern);
    for (const p of ['8080', '8080/tcp', '53/udp']) {
      assert.ok(port.test(p), p);
      parseSpec({ ...minimal, ports: [p] });
    }
    const owner = new RegExp(schema.properties.owner.pattern);
    assert.ok(owner.test('1:2') && !owner.test('root:root'));
    const rel = new RegExp(schema.$defs.relativePath.not.pattern);
    for (const bad of ['/a', '../a', 'a/../b', './a', 'a//b', 'a\\b']) {
      assert.ok(rel.test(bad), `schema refuses ${bad}`);
      assert.throws(() => parseSpec({ ...minimal, files: [bad] }), InvalidSpecError, `validator refuses ${bad}`);
    }
    for (const good of ['a', 'a/b', 'dist/', 'a..b', '.hidden']) {
      assert.ok(!rel.test(good), `schema accepts ${good}`);
      parseSpec({ ...minimal, files: [good] });
    }
  });
  /**
   * The same specs through a real JSON Schema validator (ajv, draft 2020-12, ECMA-262 patterns as
   * the draft says) and through parseSpec: both accept or both refuse. Covers review3's 42 cases
   * and the edges of every pattern.
   */
  describe('a JSON Schema validator and parseSpec agree', () => {
    const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);
    const digest = `sha256:${'0'.repeat(64)}`;
    const cases: Array<Record<string, unknown>> = [
      { ports: ['8080/Tcp'] }, { ports: ['53/UDP'] }, { ports: ['1/sCtP'] }, { ports: ['0'] }, { ports: ['00000'] }, { ports: ['99999'] },
      { ports: ['65535'] }, { ports: ['65536'] }, { ports: ['00080'] }, { ports: ['000080'] }, { ports: ['80/http'] }, { ports: ['80/'] },
      { ports: [0] }, { ports: [65535] }, { ports: [65536] }, { ports: ['8080 '] },
      { env: { 'A B': '1' } }, { env: { 'A\tB': '1' } }, { env: { '': '1' } }, { env: { 'A=B': '1' } }, { env: { 'A\u0000': '1' } }, { env: { A: 'x\u0000' } },
      { env: ['A B=1'] }, { env: ['=x'] }, { env: ['A=x=y'] }, { env: ['A='] }, { env: ['A'] }, { env: ['A=\u0000'] }, { env: { 'ünï': 'ok' } },
      { labels: { '': 'x' } }, { labels: { 'a\u0000': 'x' } }, { labels: { a: 'x\u0000' } }, { annotations: { '': 'x' } }, { labels: { ' ': '' } },
      { owner: '99999999999:0' }, { owner: '4294967296:0' }, { owner: '4294967295:4294967295' }, { owner: '0000000001:0' }, { owner: '00000000001:0' },
      { owner: '0:0' }, { owner: '4294967299:0' }, { owner: '4300000000:0' }, { owner: '1:' }, { owner: 'root:root' }, { owner: '1:2:3' },
      { cmd: ' ' }, { cmd: "'unterminated" }, { cmd: '"unterminated' }, { cmd: 'a\\' }, { cmd: '\\\n' }, { cmd: '\\\\' }, { cmd: "''" }, { cmd: '""' },
      { cmd: 'sh -c "echo \\"hi\\""' }, { cmd: "a 'b\\'" }, { cmd: 'a\u0000' }, { cmd: ['a\u0000'] }, { cmd: [] }, { cmd: [''] },
      { entrypoint: '' }, { entrypoint: '\t\r\n' }, { entrypoint: 'node server.js' },
      { tags: [`repo@${digest}`] }, { tags: ['Bad Tag'] }, { tags: ['v1', 'other.example/x:y'] }, { tags: [''] },
      { target: `example.com/app@${digest}` }, { target: 'UPPER/case' }, { base: 'scratch', target: 'scratch' }, { base: `debian@${digest}` }, { base: 'a b' },
      { files: [{ bundle: 'x.TAR' }] }, { files: [{ bundle: 'dir/' }] }, { files: [{ bundle: 'a.tar', to: '/' }] }, { files: [{ bundle: 'a.tar.gz/' }] },
      { files: [{ from: 'a/' }] }, { files: ['a\u0000b'] }, { files: [{ from: 'a', to: '/a\u0000' }] }, { files: [{ bundle: 'a\u0000.tar' }] },
      { workdir: '/x\u0000' }, { workdir: '/x' }, { workdir: 'x' }, { user: 'u\u0000' }, { $schema: 'x\u0000' },
      { files: [{ from: 'a', mode: '8' }] }, { files: [{ from: 'a', mode: 4096 }] }, { files: [{ from: 'a', mode: '00755' }] }, { files: [{ from: 'a', mode: 493.5 }] },
      { files: [{ from: 'a', to: '/a/./b' }] }, { files: [{ from: 'a', to: '//a' }] },
      { platforms: ['linux/amd64/v2/x'] }, { platforms: ['linux'] }, { platforms: ['linux/arm/v7', 'Linux/AMD64'] }, { platforms: ['linux/am d64'] },
      { platforms: 'all' }, { platforms: [] }, { platforms: 'linux/amd64' }, { user: '' },
      { files: [{ to: '/x' }] }, { files: [{}] }, { files: ['a/..'] }, { files: ['a/./'] }, { files: ['a//'] },
      { files: [{ bundle: 'a.tar', to: '/x/..' }] }, { files: [{ bundle: 'a.tar', to: 'relative' }] }, { files: [{ bundel: 'a.tar' }] }, { files: [{ from: 'a', bundle: 'a.tar' }] },
    ];
    for (const c of cases) {
      test(JSON.stringify(c), () => {
        const spec = { ...minimal, ...c };
        const schemaSays = validate(spec) ? 'accepts' : `refuses (${JSON.stringify(validate.errors?.[0])})`;
        let tool = 'accepts';
        try {
          parseSpec(spec);
        } catch (err) {
          if (!(err instanceof InvalidSpecError)) throw err;
          tool = `refuses (${err.message})`;
        }
        assert.equal(schemaSays.startsWith('accepts'), tool.startsWith('accepts'), `schema ${schemaSays}, parseSpec ${tool}`);
      });
    }
    // What the schema leaves to the tool, as its description says: the image reference grammar.
    for (const c of [{ base: 'Debian:12' }, { target: 'r.example/a:-bad' }, { tags: ['r.example/A:x'] }, { base: 'debian@sha256:abc' }]) {
      test(`left to the tool: ${JSON.stringify(c)}`, () => {
        const spec = { ...minimal, ...c };
        assert.ok(validate(spec), 'the schema accepts it');
        assert.throws(() => parseSpec(spec), InvalidSpecError);
      });
    }
  });
});
