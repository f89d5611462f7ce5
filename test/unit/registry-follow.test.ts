import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressKind, isPrivateHost, mayFollow, privateNetwork, registryNetworks, type AddressKind, type PrivateNetwork } from '../../src/registry/endpoint.ts';

test('private, loopback and unique-local addresses', () => {
  for (const h of ['127.0.0.1', 'localhost', '[::1]', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '[fd12::1]', '::ffff:10.0.0.1']) {
    assert.equal(isPrivateHost(h), true, h);
  }
  for (const h of ['8.8.8.8', '172.32.0.1', '192.169.0.1', 'us-docker.pkg.dev', '[2001:db8::1]']) assert.equal(isPrivateHost(h), false, h);
});

// Judged by the address bytes: URL parsing rewrites [::ffff:127.0.0.1] as [::ffff:7f00:1], which a
// match on the dotted spelling missed, so a public registry could send an upload to loopback.
const kinds: Array<[host: string, kind: AddressKind | undefined]> = [
  ['[::ffff:7f00:1]', 'private'],
  ['::ffff:127.0.0.1', 'private'],
  ['[0:0:0:0:0:ffff:7f00:1]', 'private'],
  ['[::ffff:c0a8:101]', 'private'], // 192.168.1.1
  ['[::ffff:a00:1]', 'private'], // 10.0.0.1
  ['[::ffff:0:7f00:1]', 'private'], // IPv4-translated 127.0.0.1
  ['[::7f00:1]', 'private'], // IPv4-compatible 127.0.0.1
  ['[64:ff9b::a00:5]', 'private'], // NAT64 10.0.0.5
  ['[::ffff:808:808]', 'public'], // 8.8.8.8
  ['[::ffff:a9fe:a9fe]', 'forbidden'], // 169.254.169.254
  ['[::ffff:0:a9fe:a9fe]', 'forbidden'],
  ['[::a9fe:a9fe]', 'forbidden'],
  ['[64:ff9b::a9fe:a9fe]', 'forbidden'],
  ['[fd00:ec2::254]', 'forbidden'], // AWS metadata over IPv6
  ['[fe80::1]', 'forbidden'],
  ['[FEBF::1]', 'forbidden'],
  ['0.0.0.0', 'forbidden'],
  ['0.1.2.3', 'forbidden'],
  ['[::]', 'forbidden'],
  ['[::1]', 'private'],
  ['[fec0::1]', 'private'],
  ['0x7f000001', 'private'],
  ['127.1', 'private'],
  ['foo.localhost', 'private'],
  ['[2001:db8::1]', 'public'],
  ['93.184.216.34', 'public'],
  ['registry.example.com', undefined],
];
for (const [host, kind] of kinds) test(`addressKind(${host}) → ${kind}`, () => assert.equal(addressKind(host), kind));

test('where a registry may send us', () => {
  const rows: Array<[string, string, boolean]> = [
    ['us-docker.pkg.dev', 'https://us-docker.pkg.dev/v2/token', true],
    ['us-docker.pkg.dev', 'https://storage.googleapis.com/bucket/blob', true],
    ['us-docker.pkg.dev', 'http://169.254.169.254/computeMetadata/v1/', false],
    ['us-docker.pkg.dev', 'http://metadata.google.internal/', false],
    ['us-docker.pkg.dev', 'http://10.0.0.5/upload', false],
    ['us-docker.pkg.dev', 'http://127.0.0.1:8080/', false],
    ['us-docker.pkg.dev', 'file:///etc/passwd', false],
    ['10.0.0.5:5000', 'http://10.0.0.5:5001/token', true],
    ['127.0.0.1:5000', 'http://127.0.0.1:6000/token', true],
    ['127.0.0.1:5000', 'http://169.254.169.254/', false],
    ['registry.example.com', 'http://[::ffff:127.0.0.1]:8080/token', false],
    ['registry.example.com', 'http://[::ffff:7f00:1]/upload', false],
    ['registry.example.com', 'http://[0:0:0:0:0:ffff:c0a8:101]/', false],
    ['registry.example.com', 'http://[::127.0.0.1]/', false],
    ['registry.example.com', 'http://foo.localhost/', false],
    ['registry.example.com', 'http://[::ffff:0:a9fe:a9fe]/', false],
    ['registry.example.com', 'https://[::ffff:808:808]/blob', true],
    ['127.0.0.1:5000', 'http://[::ffff:7f00:1]:6000/token', true],
    ['127.0.0.1:5000', 'http://[::ffff:a9fe:a9fe]/', false],
  ];
  for (const [registry, target, ok] of rows) assert.equal(mayFollow(registry, new URL(target)), ok, `${registry} → ${target}`);
});

test('which private network an address is on', () => {
  const rows: Array<[string, PrivateNetwork | undefined]> = [
    ['127.0.0.1', 'loopback'], ['127.1', 'loopback'], ['::1', 'loopback'], ['[::ffff:7f00:1]', 'loopback'], ['foo.localhost', 'loopback'],
    ['10.1.2.3', 'lan'], ['172.16.0.1', 'lan'], ['192.168.1.1', 'lan'], ['100.64.0.1', 'lan'], ['fd12::1', 'lan'], ['::ffff:10.0.0.1', 'lan'],
    ['169.254.169.254', undefined], ['fe80::1', undefined], ['8.8.8.8', undefined], ['harbor.corp.example', undefined],
  ];
  for (const [host, network] of rows) assert.equal(privateNetwork(host), network, host);
  assert.deepEqual(registryNetworks(['10.1.2.3', 'fd00::5']), new Set(['lan']));
  assert.deepEqual(registryNetworks(['10.1.2.3', '203.0.113.7']), new Set(), 'a name with a public address is a public registry');
  assert.deepEqual(registryNetworks([]), new Set());
});

// On-prem Harbor or distribution storing blobs on MinIO redirects blob GETs to the MinIO address
// (http://10.1.2.3:9000/…) while users name the registry (harbor.corp.example): the name's
// addresses say whether the registry is on that private network.
test('a registry whose name resolved to a private network may send us there, and only there', () => {
  const lan = new Set<PrivateNetwork>(['lan']);
  const loopback = new Set<PrivateNetwork>(['loopback']);
  const rows: Array<[string, string, ReadonlySet<PrivateNetwork>, boolean]> = [
    ['harbor.corp.example', 'http://10.1.2.3:9000/registry/docker/registry/v2/blobs/data', lan, true],
    ['harbor.corp.example', 'http://[fd00::5]:9000/blob', lan, true],
    ['harbor.corp.example', 'http://10.1.2.3:9000/blob', new Set(), false],
    ['harbor.corp.example', 'http://127.0.0.1:9000/blob', lan, false],
    ['harbor.corp.example', 'http://[::1]:9000/blob', lan, false],
    ['harbor.corp.example', 'http://10.1.2.3:9000/blob', loopback, false],
    ['registry.test', 'http://127.0.0.1:9000/blob', loopback, true],
    ['harbor.corp.example', 'http://169.254.169.254/computeMetadata/v1/', lan, false],
    ['harbor.corp.example', 'http://[fe80::1]/', lan, false],
    ['harbor.corp.example', 'http://metadata.google.internal/', lan, false],
    ['harbor.corp.example', 'http://[::ffff:a9fe:a9fe]/', lan, false],
    ['harbor.corp.example', 'file:///etc/passwd', lan, false],
  ];
  for (const [registry, target, networks, ok] of rows) assert.equal(mayFollow(registry, new URL(target), networks), ok, `${registry} (${[...networks]}) → ${target}`);
});
