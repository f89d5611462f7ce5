import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_PLATFORMS, parsePlatform, selectEntries } from '../../src/build/platform.ts';
import { PlatformMismatchError, UnsupportedError, UsageError } from '../../src/errors.ts';
import type { Descriptor, Platform } from '../../src/oci/types.ts';

const entry = (platform: Platform | undefined, n: number): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${String(n).padStart(64, '0')}`,
  size: 100 + n,
  ...(platform ? { platform } : {}),
});
const amd64 = entry({ os: 'linux', architecture: 'amd64' }, 1);
const arm64 = entry({ os: 'linux', architecture: 'arm64', variant: 'v8' }, 2);
const armv7 = entry({ os: 'linux', architecture: 'arm', variant: 'v7' }, 3);
// BuildKit's provenance: an `unknown/unknown` entry next to the one image.
const attestation = entry({ os: 'unknown', architecture: 'unknown' }, 4);

test('no --platform: the index\'s only platform, attestations aside', () => {
  assert.deepEqual(selectEntries([arm64], 'default', 'b'), [arm64]);
  assert.deepEqual(selectEntries([armv7, attestation], 'default', 'b'), [armv7]);
  assert.deepEqual(selectEntries([attestation, arm64], 'default', 'b'), [arm64]);
});

test('no --platform on a multi-platform index: linux/amd64, whatever the host', () => {
  assert.deepEqual(selectEntries([arm64, amd64, attestation], 'default', 'b'), [amd64]);
  assert.throws(
    () => selectEntries([arm64, armv7], 'default', 'b:1'),
    (e: unknown) => e instanceof PlatformMismatchError && e.message === 'base image b:1 has no linux/amd64 variant; available: linux/arm64/v8, linux/arm/v7',
  );
  assert.throws(() => selectEntries([attestation], 'default', 'b'), /has no linux\/amd64 variant; available: \(none\)/);
});

test('named platforms must each be in the index, even when it has only one', () => {
  assert.deepEqual(selectEntries([amd64, arm64], [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'amd64' }], 'b'), [arm64, amd64]);
  assert.throws(() => selectEntries([arm64], [{ os: 'linux', architecture: 'amd64' }], 'b'), /has no linux\/amd64 variant; available: linux\/arm64\/v8/);
});

test('all: every image entry, and an error for an index with none', () => {
  assert.deepEqual(selectEntries([amd64, attestation, arm64], 'all', 'b'), [amd64, arm64]);
  assert.throws(() => selectEntries([attestation, entry(undefined, 5)], 'all', 'b'), (e: unknown) => e instanceof PlatformMismatchError && /has no all variant/.test(e.message));
});

test('two spellings of one platform pick its entry once (else the index lists it twice)', () => {
  const wanted = [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'amd64' }];
  assert.deepEqual(selectEntries([amd64, arm64], wanted, 'b'), [arm64, amd64]);
});

test('two platforms that share one manifest both stay (an index, as with all)', () => {
  const shared = `sha256:${'7'.repeat(64)}` as const;
  const v6 = { ...entry({ os: 'linux', architecture: 'arm', variant: 'v6' }, 5), digest: shared };
  const v7 = { ...entry({ os: 'linux', architecture: 'arm', variant: 'v7' }, 6), digest: shared };
  const wanted = [{ os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'arm', variant: 'v7' }];
  assert.deepEqual(selectEntries([v6, v7], wanted, 'b'), [v6, v7]);
});

// python:3.12, eclipse-temurin and mcr.microsoft.com/dotnet list windows/amd64 entries next to
// the Linux ones. artificer's layer is a Linux tar; Windows layers need another format and their
// foreign base layers cannot be copied, so only Linux entries are ever built on.
const windows = entry({ os: 'windows', architecture: 'amd64' }, 8);

test('all and the default skip non-Linux entries', () => {
  assert.deepEqual(selectEntries([amd64, windows, arm64, attestation], 'all', 'b'), [amd64, arm64]);
  assert.deepEqual(selectEntries([windows, arm64], 'default', 'b'), [arm64], 'the only Linux platform');
});

test('an index with nothing Linux: the mismatch error lists what it has', () => {
  for (const wanted of ['all', 'default'] as const) {
    assert.throws(
      () => selectEntries([windows, attestation], wanted, 'b'),
      (e: unknown) => e instanceof PlatformMismatchError && /available: windows\/amd64$/.test(e.message),
      wanted,
    );
  }
});

test('a non-Linux platform asked for by name is a usage error saying artificer builds Linux images', () => {
  for (const text of ['windows/amd64', 'darwin/arm64']) {
    assert.throws(() => parsePlatform(text), (e: unknown) => e instanceof UsageError && /builds Linux images only/.test(e.message), text);
  }
  assert.throws(
    () => selectEntries([amd64, windows], [{ os: 'windows', architecture: 'amd64' }], 'b'),
    (e: unknown) => e instanceof UsageError && /builds Linux images only/.test(e.message),
  );
});

test('a bare linux/arm means arm/v7, as docker and containerd normalise it (alpine lists arm/v6 first)', () => {
  const v6 = entry({ os: 'linux', architecture: 'arm', variant: 'v6' }, 9);
  const arm = [{ os: 'linux', architecture: 'arm' }];
  assert.deepEqual(selectEntries([amd64, v6, armv7], arm, 'b'), [armv7]);
  assert.deepEqual(selectEntries([v6, armv7], [{ os: 'linux', architecture: 'arm', variant: '7' }], 'b'), [armv7], 'a bare number is v + it');
  // An entry without a variant is v7 too.
  const bare = entry({ os: 'linux', architecture: 'arm' }, 10);
  assert.deepEqual(selectEntries([v6, bare], [{ os: 'linux', architecture: 'arm', variant: 'v7' }], 'b'), [bare]);
});

test('a platform is matched in lower case, as docker normalises it', () => {
  assert.deepEqual(parsePlatform('LINUX/AMD64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(parsePlatform('Linux/ARM/V7'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  assert.deepEqual(selectEntries([arm64, amd64, armv7], [parsePlatform('LINUX/AMD64'), parsePlatform('linux/ARM/v7')], 'b'), [amd64, armv7]);
});

test('a bare linux/arm falls back to v6, then v5, as containerd\'s platforms.Only(linux/arm/v7) does; a named variant is exact', () => {
  const v5 = entry({ os: 'linux', architecture: 'arm', variant: 'v5' }, 11);
  const v6 = entry({ os: 'linux', architecture: 'arm', variant: 'v6' }, 12);
  const arm = [{ os: 'linux', architecture: 'arm' }];
  assert.deepEqual(selectEntries([amd64, v6], arm, 'b'), [v6], 'a v6-only index');
  assert.deepEqual(selectEntries([v5, amd64, v6], arm, 'b'), [v6], 'v6 before v5, whatever the order');
  assert.deepEqual(selectEntries([amd64, v5], arm, 'b'), [v5]);
  assert.deepEqual(selectEntries([v5, v6, armv7], arm, 'b'), [armv7]);
  assert.throws(
    () => selectEntries([amd64, arm64], arm, 'b'),
    (e: unknown) => e instanceof PlatformMismatchError && e.message === 'base image b has no linux/arm/v7 (or v6, v5) variant; available: linux/amd64, linux/arm64/v8',
  );
  assert.throws(() => selectEntries([amd64, v6], [{ os: 'linux', architecture: 'arm', variant: 'v7' }], 'b'), /has no linux\/arm\/v7 variant; available: linux\/amd64, linux\/arm\/v6$/);
  assert.throws(() => selectEntries([v5, armv7], [{ os: 'linux', architecture: 'arm', variant: 'v6' }], 'b'), /has no linux\/arm\/v6 variant/);
});

test('linux/arm64/v8 matches an arm64 entry that names no variant (containerd: arm64 and arm64/v8 are one platform)', () => {
  const bareArm64 = entry({ os: 'linux', architecture: 'arm64' }, 13);
  assert.deepEqual(selectEntries([amd64, bareArm64], [{ os: 'linux', architecture: 'arm64', variant: 'v8' }], 'b'), [bareArm64]);
  assert.deepEqual(selectEntries([amd64, bareArm64], [{ os: 'linux', architecture: 'arm64', variant: '8' }], 'b'), [bareArm64], 'a bare 8 is v8');
});

test(`an index of thousands of Linux platforms is refused past ${MAX_PLATFORMS}, before any is fetched`, () => {
  // A hostile base: 20,000 entries (what 4 MiB of index holds), each a variant of its own.
  const huge = Array.from({ length: 20_000 }, (_, i) => entry({ os: 'linux', architecture: 'amd64', variant: `v${i}` }, i));
  const refused = (n: number) => (e: unknown) =>
    e instanceof UnsupportedError && e.message === `base image b:1: building on ${n} of its platforms; at most ${MAX_PLATFORMS} are built in one build`;
  assert.throws(() => selectEntries(huge, 'all', 'b:1'), refused(20_000));
  // A list of as many platforms (a spec of 1 MiB names thousands) is held to the same bound.
  const wanted = huge.slice(0, MAX_PLATFORMS + 1).map((e) => e.platform!);
  assert.throws(() => selectEntries(huge, wanted, 'b:1'), refused(MAX_PLATFORMS + 1));
  assert.equal(selectEntries(huge.slice(0, MAX_PLATFORMS), 'all', 'b:1').length, MAX_PLATFORMS);
  assert.equal(selectEntries(huge, wanted.slice(0, MAX_PLATFORMS), 'b:1').length, MAX_PLATFORMS);
});

test('a mismatch names at most 20 of the base\'s platforms, their control characters escaped: the registry wrote them', () => {
  // An index of 5,000 entries whose names would clear a terminal and set its title.
  const hostile = Array.from({ length: 5000 }, (_, i) => entry({ os: 'windows\u001b[2J\u001b]0;pwned\u0007', architecture: `a${i}` }, i));
  assert.throws(
    () => selectEntries(hostile, 'default', 'b:1'),
    (e: unknown) => {
      assert.ok(e instanceof PlatformMismatchError);
      assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f-\u009f]/);
      assert.ok(e.message.length < 2000, `${e.message.length} characters`);
      assert.match(e.message, /^base image b:1 has no linux\/amd64 variant; available: windows\\x1b\[2J\\x1b\]0;pwned\\x07\/a0, .*\/a19 and 4980 more$/);
      assert.equal(e.available.length, 5000);
      return true;
    },
  );
  const long = entry({ os: 'linux', architecture: 'x'.repeat(10_000) }, 1);
  assert.throws(() => selectEntries([long], [{ os: 'linux', architecture: 'amd64' }], 'b:1'), /available: linux\/x{58}…$/);
});
