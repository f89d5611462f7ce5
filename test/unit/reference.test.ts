import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidReferenceError } from '../../src/errors.ts';
import { formatReference, parseReference, repositoryOf, withDigest, withTag, manifestReferenceOf } from '../../src/reference/reference.ts';

const D = `sha256:${'a'.repeat(64)}` as const;

const valid: Array<[input: string, registry: string, repository: string, tag: string | undefined, digest: string | undefined]> = [
  ['ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['ubuntu:22.04', 'docker.io', 'library/ubuntu', '22.04', undefined],
  ['library/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['docker.io/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['index.docker.io/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
  ['docker.io/library/ubuntu:x', 'docker.io', 'library/ubuntu', 'x', undefined],
  ['bitnami/redis', 'docker.io', 'bitnami/redis', 'latest', undefined],
  ['a/b/c/d', 'docker.io', 'a/b/c/d', 'latest', undefined],
  [`ubuntu@${D}`, 'docker.io', 'library/ubuntu', undefined, D],
  [`ubuntu:22.04@${D}`, 'docker.io', 'library/ubuntu', '22.04', D],
  ['localhost/app', 'localhost', 'app', 'latest', undefined],
  ['localhost:5000/app:v1', 'localhost:5000', 'app', 'v1', undefined],
  [`localhost:5000/app@${D}`, 'localhost:5000', 'app', undefined, D],
  ['127.0.0.1:5000/team/app', '127.0.0.1:5000', 'team/app', 'latest', undefined],
  ['[::1]:5000/app:1', '[::1]:5000', 'app', '1', undefined],
  ['gcr.io/project/app', 'gcr.io', 'project/app', 'latest', undefined],
  ['europe-docker.pkg.dev/p/repo/img:tag_1.0-rc', 'europe-docker.pkg.dev', 'p/repo/img', 'tag_1.0-rc', undefined],
  ['Registry/app', 'Registry', 'app', 'latest', undefined],
  ['a.b/c__d/e.f/g-h/i---j', 'a.b', 'c__d/e.f/g-h/i---j', 'latest', undefined],
  ['host:5000/app:' + 'T'.repeat(128), 'host:5000', 'app', 'T'.repeat(128), undefined],
];

for (const [input, registry, repository, tag, digest] of valid) {
  test(`parseReference(${JSON.stringify(input.slice(0, 60))})`, () => {
    const r = parseReference(input);
    assert.equal(r.registry, registry);
    assert.equal(r.repository, repository);
    assert.equal(r.tag, tag);
    assert.equal(r.digest, digest);
    // The canonical form parses to the same thing.
    const again = parseReference(r.toString());
    assert.deepEqual([again.registry, again.repository, again.tag, again.digest], [registry, repository, tag, digest]);
  });
}

const invalid: Array<[input: string, reason: RegExp]> = [
  ['', /empty/],
  ['Ubuntu', /must be lowercase/],
  ['docker.io/Library/ubuntu', /must be lowercase/],
  ['gcr.io/Project/app', /must be lowercase/],
  ['ubuntu:', /invalid tag/],
  ['ubuntu:-x', /invalid tag/],
  ['ubuntu:.x', /invalid tag/],
  ['ubuntu:a/b', /invalid registry host "ubuntu:a"/],
  ['ubuntu:' + 'x'.repeat(129), /invalid tag/],
  ['ubuntu@sha256:abc', /invalid digest/],
  [`ubuntu@sha256:${'A'.repeat(64)}`, /invalid digest/],
  [`ubuntu@sha512:${'a'.repeat(128)}`, /unsupported digest algorithm/],
  ['ubuntu@', /invalid digest/],
  ['a'.repeat(64), /64-character hexadecimal/],
  ['gcr.io/', /empty/],
  ['gcr.io//app', /empty path component/],
  ['app/', /empty path component/],
  ['-app', /invalid repository path component/],
  ['app-', /invalid repository path component/],
  ['a..b', /invalid repository path component/],
  ['a___b', /invalid repository path component/],
  ['a b', /whitespace/],
  ['-bad.host/app', /invalid registry host/],
  ['host:port/app', /invalid registry host/],
  [':tag', /empty/],
  [`gcr.io/${'a/'.repeat(124)}abc`, /longer than 255/],
];

for (const [input, reason] of invalid) {
  test(`parseReference rejects ${JSON.stringify(input.slice(0, 60))}`, () => {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => {
        assert.ok(err instanceof InvalidReferenceError, String(err));
        assert.equal(err.code, 'ARTIFICER_INVALID_REFERENCE');
        assert.equal(err.reference, input);
        assert.match(err.message, reason);
        return true;
      },
    );
  });
}

test('255 characters is the limit, not 254', () => {
  const name = `gcr.io/${'a'.repeat(255 - 'gcr.io/'.length)}`;
  assert.equal(parseReference(name).repository.length, 248);
  assert.throws(() => parseReference(name + 'a'), /longer than 255/);
});

test('helpers', () => {
  const r = parseReference(`localhost:5000/app:v1@${D}`);
  assert.equal(r.toString(), `localhost:5000/app:v1@${D}`);
  assert.equal(formatReference(r), r.toString());
  assert.deepEqual(repositoryOf(r), { registry: 'localhost:5000', repository: 'app' });
  const t = withTag(r, 'v2');
  assert.equal(t.toString(), 'localhost:5000/app:v2');
  assert.equal(t.digest, undefined);
  assert.equal(manifestReferenceOf(t), 'v2');
  const d = withDigest(t, D);
  assert.equal(d.toString(), `localhost:5000/app@${D}`);
  assert.equal(manifestReferenceOf(d), D);
  assert.equal(manifestReferenceOf(r), D);
  assert.throws(() => withTag(r, 'bad tag'), InvalidReferenceError);
  assert.throws(() => withDigest(r, 'sha256:zz' as typeof D), InvalidReferenceError);
  assert.equal(parseReference('ubuntu').toString(), 'docker.io/library/ubuntu:latest');
  assert.ok(Object.isFrozen(r));
});
