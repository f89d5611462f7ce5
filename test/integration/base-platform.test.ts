// resolveBase against the real registry: a base that is a single Windows manifest (as
// mcr.microsoft.com/windows/nanoserver:<version> is) is never built on; artificer's layer is a
// Linux tar, and Windows base layers are foreign blobs that cannot be copied.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MAX_BASE_METADATA_BYTES, resolveBase } from '../../src/build/base.ts';
import { PlatformMismatchError, UnsupportedError } from '../../src/errors.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes } from '../../src/oci/types.ts';
import { parseReference } from '../../src/reference/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

let reg: RunningRegistry;
const client = new RegistryClient({ retry: { attempts: 1 } });
before(async () => {
  reg = await startRegistry();
  const repo = { registry: reg.host, repository: 'win/nanoserver' };
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'windows', 'os.version': '10.0.20348.2966', rootfs: { type: 'layers', diff_ids: [] } }));
  await client.uploadBlob(repo, { bytes: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length }, layers: [],
  }));
  await client.putManifest(repo, 'ltsc2022', manifest, MediaTypes.ociManifest);
  await pushSingle({ registry: reg.host, repository: 'pi/base' }, 'v6', { architecture: 'arm', os: 'linux', variant: 'v6' });
  await pushSingle({ registry: reg.host, repository: 'x86/base' }, 'latest', { architecture: 'amd64', os: 'linux' });
});

/** Pushes a single-platform image (no index) of `platform` with no layers. */
async function pushSingle(repo: { registry: string; repository: string }, tag: string, platform: Record<string, string>): Promise<void> {
  const config = Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: [] } }));
  await client.uploadBlob(repo, { bytes: config });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length }, layers: [],
  }));
  await client.putManifest(repo, tag, manifest, MediaTypes.ociManifest);
}
after(async () => {
  await reg?.stop();
});

test('a single Windows manifest is refused as a base, by default and with all, naming its platform', async () => {
  for (const platforms of ['default', 'all'] as const) {
    await assert.rejects(
      resolveBase({ base: parseReference(`${reg.host}/win/nanoserver:ltsc2022`), platforms }, client),
      (e: unknown) => e instanceof PlatformMismatchError && /available: windows\/amd64$/.test(e.message),
      platforms,
    );
  }
});

test('a single manifest matches a platform as an index entry would, and a mismatch names it the same way', async () => {
  const arm = { os: 'linux', architecture: 'arm' };
  const got = await resolveBase({ base: parseReference(`${reg.host}/pi/base:v6`), platforms: [arm] }, client);
  assert.deepEqual(got.images.map((i) => i.platform), [{ os: 'linux', architecture: 'arm', variant: 'v6' }], 'a bare arm builds on arm/v6');
  await assert.rejects(
    resolveBase({ base: parseReference(`${reg.host}/pi/base:v6`), platforms: [{ ...arm, variant: 'v7' }] }, client),
    (e: unknown) => e instanceof PlatformMismatchError && /has no linux\/arm\/v7 variant; available: linux\/arm\/v6$/.test(e.message),
  );
  await assert.rejects(
    resolveBase({ base: parseReference(`${reg.host}/x86/base:latest`), platforms: [arm] }, client),
    (e: unknown) => e instanceof PlatformMismatchError && e.wanted === 'linux/arm/v7 (or v6, v5)' && /available: linux\/amd64$/.test(e.message),
  );
});

test('--platform all on an index with one Linux platform still builds an index; the default builds a single manifest', async () => {
  const repo = { registry: reg.host, repository: 'x86/base' };
  const { digest, bytes } = await client.getManifest(repo, 'latest');
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MediaTypes.ociIndex,
    manifests: [{ mediaType: MediaTypes.ociManifest, digest, size: bytes.length, platform: { os: 'linux', architecture: 'amd64' } }],
  }));
  await client.putManifest(repo, 'index', index, MediaTypes.ociIndex);
  const all = await resolveBase({ base: parseReference(`${reg.host}/x86/base:index`), platforms: 'all' }, client);
  assert.equal(all.multiPlatform, true, 'all asks for an index, whatever the count');
  const one = await resolveBase({ base: parseReference(`${reg.host}/x86/base:index`), platforms: 'default' }, client);
  assert.equal(one.multiPlatform, false);
  assert.deepEqual(one.images.map((i) => i.manifestDigest), [digest]);
});

test('a base whose manifests and configs take more than MAX_BASE_METADATA_BYTES is refused, not held in memory', async () => {
  // Three platforms of a 12 MiB config each (a label of 12 MiB): 36 MiB. A hostile index of 64
  // platforms of 16 MiB configs (the most a config may be) and 4 MiB manifests held 1.25 GiB.
  const repo = { registry: reg.host, repository: 'huge/configs' };
  const manifests = [];
  for (const architecture of ['amd64', 'arm64', 's390x']) {
    const config = Buffer.from(JSON.stringify({ architecture, os: 'linux', config: { Labels: { big: 'x'.repeat(12 * 1024 * 1024) } }, rootfs: { type: 'layers', diff_ids: [] } }));
    await client.uploadBlob(repo, { bytes: config });
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length }, layers: [],
    }));
    const digest = await client.putManifest(repo, architecture, manifest, MediaTypes.ociManifest);
    manifests.push({ mediaType: MediaTypes.ociManifest, digest, size: manifest.length, platform: { os: 'linux', architecture } });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
  await client.putManifest(repo, 'all', index, MediaTypes.ociIndex);
  const base = parseReference(`${reg.host}/huge/configs:all`);
  assert.equal((await resolveBase({ base, platforms: [{ os: 'linux', architecture: 'amd64' }] }, client)).images.length, 1, 'one of them is fine');
  await assert.rejects(resolveBase({ base, platforms: 'all' }, client), (e: unknown) => {
    assert.ok(e instanceof UnsupportedError, String(e));
    assert.match(e.message, new RegExp(`^base image ${base.toString().replace(/[.]/g, '\\.')}: its manifests and configs take more than ${MAX_BASE_METADATA_BYTES} bytes \\(at platform \\d of 3\\)`));
    return true;
  });
});
