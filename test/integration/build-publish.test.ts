// What build() writes to a real registry once its layer is known, read from the requests a proxy
// saw: every blob in every target repository before any manifest, one manifest PUT per tag, the
// tags last, the pushed digest the one printed, the tag set never left half moved by an abort,
// and a docker tarball written beside the push that matches it.
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import tar from 'tar-stream';
import { build } from '../../src/build/build.ts';
import type { BuildRequest } from '../../src/build/request.ts';
import { AbortedError, DigestMismatchError, TagsIncompleteError } from '../../src/errors.ts';
import { MediaTypes, type ImageIndex, type ImageManifest } from '../../src/oci/types.ts';
import { parseReference } from '../../src/reference/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pushBusyboxBase, type PushedImage } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let registry: RunningRegistry;
/** Another registry, holding a base: its blobs are copied, not mounted. */
let other: RunningRegistry;
let base: PushedImage;
let proxy: FaultProxy;
let work: TempDir;
/** Straight to the registry, past the proxy: what is there once build() has settled. */
const direct = new RegistryClient({ retry: { attempts: 1 } });

before(async () => {
  [registry, other, work] = await Promise.all([startRegistry(), startRegistry(), tempDir('build-publish')]);
  proxy = await startFaultProxy(registry.url);
  base = await pushBusyboxBase(other.host, { repository: 'base/busybox', tag: '1', format: 'oci' });
  await writeFile(path.join(work.path, 'hello'), 'hello\n');
});

after(async () => {
  await proxy?.stop();
  await Promise.all([registry?.stop(), other?.stop()]);
  await work?.remove();
});

function request(targets: string[], platforms: BuildRequest['platforms'] = 'default'): BuildRequest {
  return {
    base: 'scratch',
    platforms,
    files: localSource([{ from: 'hello', to: '' }], { cwd: work.path }),
    layer: { mtime: 0 },
    config: { cmd: ['/hello'] },
    annotations: {},
    outputs: { registry: targets.map((t) => parseReference(`${proxy.host}/${t}`)) },
  };
}

const log = (): string[] => proxy.requests.map((q) => `${q.method} ${decodeURIComponent(q.path)} ${q.status ?? '-'}`);
const tagged = async (repository: string, tag: string): Promise<string | undefined> =>
  (await direct.getManifest({ registry: registry.host, repository }, tag).catch(() => undefined))?.digest;

test('blobs first in every repository, then one manifest PUT per tag: a slow blob holds the tags back', async () => {
  proxy.reset();
  // The second repository gets the new layer by a mount from the first; it answers late.
  proxy.failNext(5, { delayMs: 700, method: 'POST', match: /^\/v2\/publish\/second\/blobs\/uploads\/\?mount=/ });
  const result = await build(request(['publish/first:1', 'publish/first:1', 'publish/first:2', 'publish/second:1']), { registry: new RegistryClient({ retry: { attempts: 1 } }) });
  const lines = log();
  const tagPuts = lines.filter((l) => /^PUT \/v2\/publish\/\w+\/manifests\//.test(l));
  assert.deepEqual(tagPuts.sort(), ['PUT /v2/publish/first/manifests/1 201', 'PUT /v2/publish/first/manifests/2 201', 'PUT /v2/publish/second/manifests/1 201'], lines.join('\n'));
  const firstTag = lines.findIndex((l) => l.startsWith('PUT /v2/publish/') && l.includes('/manifests/'));
  const lastBlob = lines.findLastIndex((l) => /^(PUT|POST|PATCH|HEAD) \/v2\/publish\/\w+\/blobs\//.test(l));
  assert.ok(lastBlob < firstTag, `every blob request before the first tag:\n${lines.join('\n')}`);
  for (const [repository, tag] of [['publish/first', '1'], ['publish/first', '2'], ['publish/second', '1']] as const) {
    assert.equal(await tagged(repository, tag), result.digest, `${repository}:${tag}`);
  }
});

test('several platforms: the index is what is tagged and printed, its manifests pushed by digest before it', async () => {
  proxy.reset();
  const platforms = [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }];
  const result = await build(request(['publish/multi:1'], platforms), { registry: new RegistryClient() });
  assert.equal(result.mediaType, MediaTypes.ociIndex);
  const pushed = await direct.getManifest({ registry: registry.host, repository: 'publish/multi' }, '1');
  assert.equal(pushed.digest, result.digest);
  assert.deepEqual(result.images, [`${proxy.host}/publish/multi@${pushed.digest}`], 'the printed digest is the index');
  const children = (pushed.manifest as ImageIndex).manifests.map((m) => m.digest);
  assert.deepEqual(result.manifests.map((m) => m.digest), children);
  const lines = log();
  const tagPut = lines.indexOf('PUT /v2/publish/multi/manifests/1 201');
  for (const child of children) {
    const put = lines.indexOf(`PUT /v2/publish/multi/manifests/${child} 201`);
    assert.ok(put >= 0 && put < tagPut, `${child} pushed by digest before the tag:\n${lines.join('\n')}`);
  }
});

test('a registry that answers a manifest PUT with another digest: an error, not a success', async () => {
  proxy.reset();
  const other = `sha256:${'0'.repeat(64)}`;
  proxy.failNext(1, { method: 'PUT', match: /\/manifests\/1$/, responseHeaders: { 'docker-content-digest': other, location: '/v2/publish/lies/manifests/' + other } });
  await assert.rejects(build(request(['publish/lies:1']), { registry: new RegistryClient({ retry: { attempts: 1 } }) }), (err: unknown) => {
    assert.ok(err instanceof DigestMismatchError, String(err));
    assert.match(err.message, new RegExp(`publish/lies:1.*${other}`));
    return true;
  });
});

test('a tag that fails after another was written: the error names the tags that moved', async () => {
  proxy.reset();
  proxy.failNext(1, { method: 'PUT', match: /\/v2\/publish\/partial\/manifests\/b$/, status: 400 });
  await assert.rejects(build(request(['publish/partial:a', 'publish/partial:b']), { registry: new RegistryClient({ retry: { attempts: 1 } }) }), (err: unknown) => {
    assert.ok(err instanceof TagsIncompleteError, String(err));
    assert.deepEqual(err.tagged, [`${proxy.host}/publish/partial:a`]);
    return true;
  });
  assert.ok(await tagged('publish/partial', 'a'));
  assert.equal(await tagged('publish/partial', 'b'), undefined);
});

test('tags are written in the order given, the target first, across repositories too', async () => {
  proxy.reset();
  proxy.failNext(1, { method: 'PUT', match: /\/v2\/publish\/order-b\/manifests\/1$/, status: 400 });
  await assert.rejects(build(request(['publish/order-a:1', 'publish/order-b:1']), { registry: new RegistryClient({ retry: { attempts: 1 } }) }), (err: unknown) => {
    assert.ok(err instanceof TagsIncompleteError, String(err));
    assert.deepEqual(err.tagged, [`${proxy.host}/publish/order-a:1`]);
    return true;
  });
});

test('aborted once the blobs are in place, before any tag: no tag is written', async () => {
  proxy.reset();
  const controller = new AbortController();
  // Logged once the layer is built and uploaded; the tags come next.
  const logger = { debug() {}, warn() {}, info: (msg: string) => void (msg === 'layer built' && controller.abort()) };
  await assert.rejects(build(request(['publish/aborted:1']), { registry: new RegistryClient(), logger, signal: controller.signal }), (err: unknown) => {
    assert.ok(err instanceof AbortedError, String(err));
    assert.match(err.message, /before any tag was written/);
    return true;
  });
  assert.equal(await tagged('publish/aborted', '1'), undefined);
  assert.ok(!log().some((l) => l.startsWith('PUT /v2/publish/aborted/manifests/')), log().join('\n'));
});

test('aborted while tagging: the tag set is finished, never left half moved', async () => {
  proxy.reset();
  const controller = new AbortController();
  const beforeTag = async (): Promise<void> => controller.abort();
  const result = await build(request(['publish/tagging:a', 'publish/tagging:b', 'publish/tagging:c']), { registry: new RegistryClient(), signal: controller.signal, beforeTag });
  for (const tag of ['a', 'b', 'c']) assert.equal(await tagged('publish/tagging', tag), result.digest, tag);
});

test("a base layer the target already has is not copied again from the base's registry", async () => {
  const req = { ...request(['publish/rebuilt:1']), base: parseReference(base.reference) };
  await build(req, { registry: new RegistryClient() });
  proxy.reset();
  await build({ ...req, outputs: { registry: [parseReference(`${proxy.host}/publish/rebuilt:2`)] } }, { registry: new RegistryClient() });
  const lines = log();
  // A HEAD finds the base's layer; the only uploads are the new layer's and the config's.
  assert.ok(lines.some((l) => l.startsWith('HEAD /v2/publish/rebuilt/blobs/sha256:') && l.endsWith(' 200')), lines.join('\n'));
  assert.equal(lines.filter((l) => l.startsWith('POST ')).length, 2, lines.join('\n'));
  assert.equal(lines.filter((l) => l.startsWith('PUT /v2/publish/rebuilt/blobs/uploads/')).length, 2, lines.join('\n'));
});

test('a docker tarball beside the push: every layer in order, base first, named by the pushed references', async () => {
  const file = path.join(work.path, 'image.tar');
  const targets = [`${proxy.host}/publish/tarball:1`, `${proxy.host}/publish/tarball:latest`];
  const req = { ...request(['publish/tarball:1', 'publish/tarball:latest']), base: parseReference(base.reference) };
  const result = await build({ ...req, outputs: { ...req.outputs, tarball: file } }, { registry: new RegistryClient() });
  const entries = new Map<string, Buffer>();
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      entries.set(header.name, Buffer.concat(chunks));
      next();
    });
  });
  await pipeline(createReadStream(file), extract);
  const [entry, ...more] = JSON.parse(entries.get('manifest.json')!.toString('utf8')) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
  assert.equal(more.length, 0);
  assert.deepEqual(entry!.RepoTags, targets);
  const pushed = (await direct.getManifest({ registry: registry.host, repository: 'publish/tarball' }, result.digest)).manifest as ImageManifest;
  assert.deepEqual(entry!.Layers, pushed.layers.map((l) => `${l.digest.slice('sha256:'.length)}.tar.gz`));
  assert.equal(entry!.Config, `${pushed.config.digest.slice('sha256:'.length)}.json`);
  for (const name of [...entry!.Layers, entry!.Config]) assert.ok(entries.has(name), name);
});
