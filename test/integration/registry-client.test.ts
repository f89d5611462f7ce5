import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { randomBytes } from 'node:crypto';
import { DigestMismatchError, ManifestUnknownError, RegistryError, UnsupportedError } from '../../src/errors.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { MediaTypes, type ImageIndex, type ImageManifest } from '../../src/oci/types.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import type { Repository } from '../../src/registry/types.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';

const noRetry = { attempts: 1, baseDelayMs: 1 };

function imageOf(config: Buffer, layers: Buffer[], mediaType: string, layerType: string, configType: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: configType, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: layerType, digest: sha256(l), size: l.length })),
    }),
  );
}

describe('RegistryClient against docker-registry without auth', () => {
  let reg: RunningRegistry;
  let client: RegistryClient;
  let repo: Repository;
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ retry: noRetry });
    repo = { registry: reg.host, repository: 'test/app' };
  });
  after(async () => {
    await reg?.stop();
  });

  test('uploads bytes, then HEAD and GET find them', async () => {
    const data = randomBytes(100_000);
    const digest = sha256(data);
    assert.equal(await client.hasBlob(repo, digest), false);
    const up = await client.uploadBlob(repo, { bytes: data });
    assert.deepEqual(up, { digest, size: data.length });
    assert.equal(await client.hasBlob(repo, digest), true);
    assert.deepEqual(await client.getBlobBytes(repo, digest), data);
    const { stream, size } = await client.getBlob(repo, digest);
    assert.equal(size, data.length);
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), data);
  });

  test('uploads a stream of unknown digest and size, hashing it on the way', async () => {
    const parts = [randomBytes(70_000), randomBytes(1), randomBytes(300_000)];
    const whole = Buffer.concat(parts);
    const up = await client.uploadBlob(repo, { open: () => Readable.from(parts), replayable: false });
    assert.deepEqual(up, { digest: sha256(whole), size: whole.length });
    assert.deepEqual(await client.getBlobBytes(repo, up.digest), whole);
  });

  test('commits a self-measured stream under its own digest; the registry refuses one that lies', async () => {
    const data = randomBytes(200_000);
    const truth = { digest: sha256(data), size: data.length };
    const up = await client.uploadBlob(repo, { open: () => ({ stream: Readable.from([data]), measured: Promise.resolve(truth) }), replayable: false });
    assert.deepEqual(up, truth);
    assert.deepEqual(await client.getBlobBytes(repo, up.digest), data);

    const other = randomBytes(1000);
    const lie = { digest: sha256(randomBytes(8)), size: other.length };
    await assert.rejects(
      client.uploadBlob(repo, { open: () => ({ stream: Readable.from([other]), measured: Promise.resolve(lie) }), replayable: false }),
      (e: unknown) => e instanceof RegistryError && /DIGEST_INVALID|digest/i.test(e.message),
    );
    assert.equal(await client.hasBlob(repo, lie.digest), false);
    assert.equal(await client.hasBlob(repo, sha256(other)), false, 'nothing committed under any digest');
  });

  // A body is opened while its upload session is (a layer's pass starts during the round trips);
  // when no session can be had, the body is stopped, not left waiting with what it holds (a
  // file's descriptor, a download) for as long as the process lives.
  for (const replayable of [true, false]) {
    test(`a ${replayable ? 'replayable' : 'single-pass'} stream is stopped when no upload session can be opened`, async () => {
      const streams: Readable[] = [];
      const open = (): Readable => {
        const s = new Readable({ read() {} }); // never ends by itself
        streams.push(s);
        return s;
      };
      await assert.rejects(client.uploadBlob({ registry: '127.0.0.1:1', repository: 'unreachable' }, { open, replayable }), /127\.0\.0\.1:1/);
      assert.equal(streams.length, 1);
      assert.equal(streams[0]!.destroyed, true);
    });
  }

  test('uploads a stream with a known digest and size', async () => {
    const data = randomBytes(5000);
    const up = await client.uploadBlob(repo, { open: () => Readable.from([data]), digest: sha256(data), size: data.length, replayable: true });
    assert.equal(up.digest, sha256(data));
    assert.equal(await client.hasBlob(repo, up.digest), true);
  });

  test('an empty blob', async () => {
    const up = await client.uploadBlob(repo, { bytes: new Uint8Array(0) });
    assert.equal(up.digest, sha256(''));
    assert.equal(up.size, 0);
  });

  test('a stream whose content does not match the claimed digest fails and stores nothing', async () => {
    const data = randomBytes(1000);
    const claimed = sha256('something else');
    await assert.rejects(
      client.uploadBlob(repo, { open: () => Readable.from([data]), digest: claimed, replayable: true }),
      (err: unknown) => err instanceof DigestMismatchError && err.message.includes(`pushing blob ${claimed} to ${reg.host}/test/app`),
    );
    assert.equal(await client.hasBlob(repo, sha256(data)), false);
    assert.equal(await client.hasBlob(repo, claimed), false);
  });

  test('bytes with a wrong digest are refused before anything is sent', async () => {
    await assert.rejects(client.uploadBlob(repo, { bytes: Buffer.from('x'), digest: sha256('y') }), DigestMismatchError);
  });

  test('mounts a blob from another repository of the same registry', async () => {
    const data = randomBytes(2000);
    const { digest } = await client.uploadBlob(repo, { bytes: data });
    const other = { registry: reg.host, repository: 'test/other' };
    assert.equal(await client.hasBlob(other, digest), false);
    assert.deepEqual(await client.mountBlob(other, digest, repo), { mounted: true });
    assert.equal(await client.hasBlob(other, digest), true);
  });

  test('a mount of a missing blob is declined, with the upload session the registry opened instead', async () => {
    const missing = sha256(randomBytes(10));
    const mount = await client.mountBlob({ registry: reg.host, repository: 'test/other' }, missing, repo);
    assert.equal(mount.mounted, false);
    assert.match((!mount.mounted && mount.session) || '', new RegExp(`^${reg.url}/v2/test/other/blobs/uploads/`));
  });

  for (const family of ['docker', 'oci'] as const) {
    test(`manifest round trip (${family}), by tag and by digest`, async () => {
      const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
      const layer = randomBytes(3000);
      await client.uploadBlob(repo, { bytes: config });
      await client.uploadBlob(repo, { bytes: layer });
      const mt = family === 'docker' ? MediaTypes.dockerManifest : MediaTypes.ociManifest;
      const bytes = family === 'docker'
        ? imageOf(config, [layer], mt, MediaTypes.dockerLayerGzip, MediaTypes.dockerConfig)
        : imageOf(config, [layer], mt, MediaTypes.ociLayerGzip, MediaTypes.ociConfig);
      const digest = await client.putManifest(repo, family, bytes, mt);
      assert.equal(digest, sha256(bytes));
      for (const ref of [family, digest]) {
        const got = await client.getManifest(repo, ref);
        assert.equal(got.mediaType, mt);
        assert.equal(got.digest, digest);
        assert.deepEqual(got.bytes, bytes);
        assert.equal((got.manifest as ImageManifest).layers.length, 1);
      }
    });
  }

  // docker-registry answers a client whose Accept lacks the manifest list type with the
  // linux/amd64 entry instead (registry/handlers/manifests.go): a multi-platform base would
  // silently become a single-platform one. Both index types must come back as indexes.
  const indexes = [
    { name: 'an OCI index', tag: 'multi', arch: 'arm64', index: MediaTypes.ociIndex, manifest: MediaTypes.ociManifest, layer: MediaTypes.ociLayerGzip, config: MediaTypes.ociConfig },
    { name: 'a Docker manifest list', tag: 'docker-list', arch: 'amd64', index: MediaTypes.dockerManifestList, manifest: MediaTypes.dockerManifest, layer: MediaTypes.dockerLayerGzip, config: MediaTypes.dockerConfig },
  ];
  for (const t of indexes) {
    test(`${t.name} is fetched as the index it is, not as the image distribution falls back to`, async () => {
      const config = Buffer.from(`{"architecture":"${t.arch}","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`);
      await client.uploadBlob(repo, { bytes: config });
      const m = imageOf(config, [], t.manifest, t.layer, t.config);
      const md = await client.putManifest(repo, sha256(m), m, t.manifest);
      const index = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: t.index,
        manifests: [{ mediaType: t.manifest, digest: md, size: m.length, platform: { os: 'linux', architecture: t.arch } }],
      }));
      const id = await client.putManifest(repo, t.tag, index, t.index);
      const got = await client.getManifest(repo, t.tag);
      assert.equal(got.mediaType, t.index);
      assert.equal(got.digest, id);
      assert.equal((got.manifest as ImageIndex).manifests[0]!.digest, md);
    });
  }

  test('a missing tag, a missing digest and a missing repository are ManifestUnknownError naming the reference', async () => {
    const missing = sha256('nope');
    for (const [r, ref, shown] of [
      [repo, 'no-such-tag', `${reg.host}/test/app:no-such-tag`],
      [repo, missing, `${reg.host}/test/app@${missing}`],
      [{ registry: reg.host, repository: 'no/such/repo' }, 'latest', `${reg.host}/no/such/repo:latest`],
    ] as const) {
      await assert.rejects(client.getManifest(r, ref), (err: unknown) => {
        assert.ok(err instanceof ManifestUnknownError, String(err));
        assert.equal(err.reference, shown);
        assert.match(err.message, new RegExp(`image ${shown.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} not found`));
        return true;
      });
    }
  });

  test('putManifest with a digest reference that is not the bytes’ digest is refused', async () => {
    await assert.rejects(client.putManifest(repo, sha256('other'), Buffer.from('{}'), MediaTypes.ociManifest), DigestMismatchError);
  });

  test('a manifest naming a missing blob is a RegistryError with the parsed registry error', async () => {
    const ghost = Buffer.from('ghost');
    const bytes = imageOf(ghost, [], MediaTypes.ociManifest, MediaTypes.ociLayerGzip, MediaTypes.ociConfig);
    await assert.rejects(client.putManifest(repo, 'broken', bytes, MediaTypes.ociManifest), (err: unknown) => {
      assert.ok(err instanceof RegistryError, String(err));
      assert.equal(err.status, 400);
      assert.equal(err.method, 'PUT');
      assert.equal(err.temporary, false);
      assert.ok(err.errors.some((e) => e.code === 'MANIFEST_BLOB_UNKNOWN'), JSON.stringify(err.errors));
      assert.match(err.message, /^pushing manifest 127\.0\.0\.1:\d+\/test\/app:broken: PUT http:\/\/127\.0\.0\.1:\d+\/v2\/test\/app\/manifests\/broken returned 400 \(MANIFEST_BLOB_UNKNOWN/);
      return true;
    });
  });

  test('a blob whose bytes do not match is detected when read', async () => {
    // Corrupt the stored blob on disk: the registry serves what is there.
    const data = randomBytes(100);
    const { digest } = await client.uploadBlob(repo, { bytes: data });
    const { writeFile } = await import('node:fs/promises');
    const hex = digest.slice(7);
    await writeFile(`${reg.dataDir}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`, randomBytes(100));
    await assert.rejects(client.getBlobBytes(repo, digest), DigestMismatchError);
    const { stream } = await client.getBlob(repo, digest);
    await assert.rejects(text(stream), DigestMismatchError);
  });

  test('an endless manifest or config body is cut off at the limit, not read into memory', async () => {
    const { createServer } = await import('node:http');
    let sent = 0;
    const srv = createServer((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end();
      // An endless body: 64 KiB chunks for as long as the client reads.
      res.writeHead(200, { 'content-type': MediaTypes.ociManifest });
      const chunk = Buffer.alloc(65536, 0x20);
      // Counted as written: write() returns false for every 64 KiB chunk (above the 16 KiB
      // highWaterMark), so counting only chunks it accepted counted none, and the assertion
      // on `sent` below could not fail.
      const pump = (): void => {
        while (!res.destroyed && sent < 512 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => {});
      pump();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const port = (srv.address() as { port: number }).port;
      const repo = { registry: `127.0.0.1:${port}`, repository: 'x' };
      await assert.rejects(client.getManifest(repo, 'y'), (err: unknown) => err instanceof UnsupportedError && /larger than 4194304 bytes/.test(err.message));
      assert.ok(sent < 64 * 1024 * 1024, `the client stopped reading (server sent ${sent} bytes)`);
      await assert.rejects(client.getBlobBytes(repo, `sha256:${'a'.repeat(64)}`), (err: unknown) => err instanceof UnsupportedError && /too large for an image config/.test(err.message));
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });

  test('an endless error body or token answer is cut off, not read into memory', async () => {
    const { createServer } = await import('node:http');
    const LIMIT = 96 * 1024 * 1024;
    let sent = 0;
    let tokenRealm = false;
    const srv = createServer((req, res) => {
      if (req.url === '/v2/' && tokenRealm) {
        const port = (srv.address() as { port: number }).port;
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="s"` }).end();
      }
      if (req.url === '/v2/') return void res.writeHead(200).end();
      // An error (or a token answer) that does not end: 64 KiB chunks for as long as the client reads.
      res.writeHead(req.url!.startsWith('/token') ? 200 : 400, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(65536, 0x20);
      const pump = (): void => {
        while (!res.destroyed && sent < LIMIT) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const port = (srv.address() as { port: number }).port;
      const repo = { registry: `127.0.0.1:${port}`, repository: 'x' };
      await assert.rejects(new RegistryClient({ retry: noRetry }).getManifest(repo, 'y'), (err: unknown) => err instanceof RegistryError && err.status === 400);
      assert.ok(sent < 16 * 1024 * 1024, `the client stopped reading the error (server sent ${sent} bytes)`);
      sent = 0;
      tokenRealm = true;
      await assert.rejects(new RegistryClient({ retry: noRetry }).getManifest(repo, 'y'), (err: unknown) => err instanceof RegistryError && /token server for 127\.0\.0\.1:\d+ answered with more than 1048576 bytes/.test(err.message));
      assert.ok(sent < 16 * 1024 * 1024, `the client stopped reading the token answer (server sent ${sent} bytes)`);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });

  test('a schema1 manifest is UnsupportedError', async () => {
    // distribution 2.8 refuses to store schema1 unless configured; serve one ourselves.
    const { createServer } = await import('node:http');
    const body = JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] });
    const srv = createServer((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end();
      res.writeHead(200, { 'content-type': MediaTypes.dockerManifestV1Signed, 'docker-content-digest': sha256(body) }).end(body);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const port = (srv.address() as { port: number }).port;
      await assert.rejects(client.getManifest({ registry: `127.0.0.1:${port}`, repository: 'x' }, 'y'), UnsupportedError);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});
