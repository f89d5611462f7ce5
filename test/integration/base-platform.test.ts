// resolveBase against the real registry: a base that is a single Windows manifest (as
// mcr.microsoft.com/windows/nanoserver:<version> is) is never built on; artificer's layer is a
// Linux tar, and Windows base layers are foreign blobs that cannot be copied.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { resolveBase } from '../../src/build/base.ts';
import { PlatformMismatchError } from '../../src/errors.ts';
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
});
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
