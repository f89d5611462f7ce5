import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isPrivateHost, mayFollow } from '../../src/registry/endpoint.ts';

test('private, loopback and unique-local addresses', () => {
  for (const h of ['127.0.0.1', 'localhost', '[::1]', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '[fd12::1]', '::ffff:10.0.0.1']) {
    assert.equal(isPrivateHost(h), true, h);
  }
  for (const h of ['8.8.8.8', '172.32.0.1', '192.169.0.1', 'us-docker.pkg.dev', '[2001:db8::1]']) assert.equal(isPrivateHost(h), false, h);
});

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
  ];
  for (const [registry, target, ok] of rows) assert.equal(mayFollow(registry, new URL(target)), ok, `${registry} → ${target}`);
});
