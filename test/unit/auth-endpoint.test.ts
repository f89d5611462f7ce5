import { test } from 'node:test';
import assert from 'node:assert/strict';
import { endpointFor, isForbiddenRealmHost, isLoopbackHost, splitHostPort } from '../../src/registry/endpoint.ts';
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
];
for (const [registry, insecure, origin, plainHttp] of endpoints) {
  test(`endpointFor(${registry}${insecure.length ? `, insecure ${insecure}` : ''})`, () => {
    assert.deepEqual(endpointFor(registry, insecure), { registry, origin, plainHttp });
  });
}

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
