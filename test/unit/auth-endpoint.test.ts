import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/errors.ts';
import { endpointFor, isForbiddenRealmHost, isInsecure, isLoopbackHost, splitHostPort } from '../../src/registry/endpoint.ts';
import { normalizeScopes } from '../../src/registry/auth.ts';

const endpoints: Array<[registry: string, insecure: string[], origin: string, plainHttp: boolean]> = [
  ['docker.io', [], 'https://registry-1.docker.io', false],
  ['index.docker.io', [], 'https://registry-1.docker.io', false],
  ['gcr.io', [], 'https://gcr.io', false],
  ['europe-docker.pkg.dev', [], 'https://europe-docker.pkg.dev', false],
  ['localhost', [], 'http://localhost', true],
  ['localhost:5000', [], 'http://localhost:5000', true],
  ['127.0.0.1:5000', [], 'http://127.0.0.1:5000', true],
  ['127.8.9.10', [], 'http://127.8.9.10', true],
  ['[::1]:5000', [], 'http://[::1]:5000', true],
  ['10.0.0.5:5000', [], 'https://10.0.0.5:5000', false],
  ['10.0.0.5:5000', ['10.0.0.5:5000'], 'http://10.0.0.5:5000', true],
  ['10.0.0.5:5001', ['10.0.0.5:5000'], 'https://10.0.0.5:5001', false],
  ['localhost.example.com', [], 'https://localhost.example.com', false],
  ['127.0.0.1.nip.io', [], 'https://127.0.0.1.nip.io', false],
  // The origin is in URL.origin form, or credentials are never sent (they go only to a URL whose
  // origin equals it): default ports dropped, host lowercased.
  ['registry.example.com:443', [], 'https://registry.example.com', false],
  ['localhost:80', [], 'http://localhost', true],
  ['Foo.io', [], 'https://foo.io', false],
  ['LOCALHOST:5000', [], 'http://localhost:5000', true],
  ['Docker.IO', [], 'https://registry-1.docker.io', false],
  ['MyReg:80', ['myreg'], 'http://myreg', true],
  ['10.0.0.5:443', ['10.0.0.5:443'], 'http://10.0.0.5:443', true],
];
for (const [registry, insecure, origin, plainHttp] of endpoints) {
  test(`endpointFor(${registry}${insecure.length ? `, insecure ${insecure}` : ''})`, () => {
    assert.deepEqual(endpointFor(registry, insecure), { registry, origin, plainHttp });
  });
}

test('endpointFor refuses a host URL parsing would change', () => {
  for (const bad of ['a.b:123456789', 'evil.com@good.com', 'a.b/c', 'a b']) {
    assert.throws(() => endpointFor(bad), (err: unknown) => err instanceof UsageError && err.message === `invalid registry host "${bad}"`, bad);
  }
});

test('isInsecure ignores case and an explicit :80, not other ports', () => {
  assert.equal(isInsecure('myreg', ['MyReg:80']), true);
  assert.equal(isInsecure('myreg:80', ['myreg']), true);
  assert.equal(isInsecure('myreg:8080', ['myreg']), false);
  assert.equal(isInsecure('myreg.evil', ['myreg']), false);
});

test('splitHostPort and isLoopbackHost', () => {
  assert.deepEqual(splitHostPort('[::1]:5000'), { host: '[::1]', port: '5000' });
  assert.deepEqual(splitHostPort('a.b'), { host: 'a.b' });
  assert.equal(isLoopbackHost('LOCALHOST:1'), true);
  assert.equal(isLoopbackHost('128.0.0.1'), false);
});

const realms: Array<[string, boolean]> = [
  ['169.254.169.254', true],
  ['169.254.0.1', true],
  ['metadata.google.internal', true],
  ['METADATA.GOOGLE.INTERNAL.', true],
  ['metadata', true],
  ['[fe80::1]', true],
  ['fe80::a:b', true],
  ['0.0.0.0', true],
  ['[::ffff:a9fe:a9fe]', true],
  ['[::a9fe:a9fe]', true],
  ['[fd00:ec2::254]', true],
  ['auth.docker.io', false],
  ['127.0.0.1', false],
  ['169.255.0.1', false],
  ['metadata.google.internal.evil.com', false],
];
for (const [host, forbidden] of realms) {
  test(`isForbiddenRealmHost(${host}) → ${forbidden}`, () => assert.equal(isForbiddenRealmHost(host), forbidden));
}

test('normalizeScopes merges actions per resource and sorts', () => {
  assert.deepEqual(normalizeScopes(['repository:b:push', 'repository:a:pull', 'repository:b:pull', 'repository:b:pull']), ['repository:a:pull', 'repository:b:pull,push']);
  assert.deepEqual(normalizeScopes(['registry:catalog:*']), ['registry:catalog:*']);
});
