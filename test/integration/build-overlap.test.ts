// build() against real registries behind fault proxies, where the new layer's upload and the
// base's blob copies overlap: when one of them fails, build() settles only once the other has
// stopped, so nothing is left running (the CLI's process exits, the function's next event is not
// raced by the last one's uploads).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { build } from '../../src/build/build.ts';
import type { BuildRequest } from '../../src/build/request.ts';
import type { Digest, ImageManifest } from '../../src/oci/types.ts';
import { parseReference } from '../../src/reference/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { pushBusyboxBase } from '../support/images.ts';
import { startRegistry, type RunningRegistry } from '../support/registry.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let source: RunningRegistry;
let target: RunningRegistry;
let sourceProxy: FaultProxy;
let targetProxy: FaultProxy;
let work: TempDir;
/** The base's one layer, which a push to `target` copies from `source`. */
let baseLayer: Digest;

before(async () => {
  [source, target, work] = await Promise.all([startRegistry(), startRegistry(), tempDir('build-overlap')]);
  [sourceProxy, targetProxy] = await Promise.all([startFaultProxy(source.url), startFaultProxy(target.url)]);
  await pushBusyboxBase(source.host, { repository: 'base/busybox', tag: '1', format: 'oci' });
  await pushBusyboxBase(source.host, { repository: 'base/multi', tag: '1', format: 'oci', platforms: ['linux/amd64', 'linux/arm64'] });
  const { manifest } = await new RegistryClient().getManifest({ registry: source.host, repository: 'base/busybox' }, '1');
  baseLayer = (manifest as ImageManifest).layers[0]!.digest;
  await writeFile(path.join(work.path, 'hello'), 'hello\n');
});

after(async () => {
  await Promise.all([sourceProxy?.stop(), targetProxy?.stop()]);
  await Promise.all([source?.stop(), target?.stop()]);
  await work?.remove();
});

function request(targetRef: string, base = 'base/busybox:1', platforms: BuildRequest['platforms'] = 'default'): BuildRequest {
  return {
    base: parseReference(`${sourceProxy.host}/${base}`),
    platforms,
    files: localSource([{ from: 'hello', to: '' }], { cwd: work.path }),
    layer: { mtime: 0 },
    config: {},
    annotations: {},
    outputs: { registry: [parseReference(targetRef)] },
  };
}

test('a new layer that fails stops the base blob copies running beside it', async () => {
  sourceProxy.reset();
  targetProxy.reset();
  // The base layer's download is held back; the new layer's upload fails once the copy is under way.
  sourceProxy.failNext(1, { delayMs: 2500, method: 'GET', match: new RegExp(`/blobs/${baseLayer}$`) });
  targetProxy.failNext(1, { delayMs: 600, status: 400, method: 'PATCH' });
  const client = new RegistryClient({ retry: { attempts: 1 } });
  await assert.rejects(build(request(`${targetProxy.host}/overlap/failed:1`), { registry: client }), /pushing new layer .*PATCH .* returned 400/);
  const settled = targetProxy.requests.length;
  await sleep(3000); // past the held download: a copy still running would now be put
  assert.deepEqual(targetProxy.requests.slice(settled), [], 'no request after build() settled');
  const log = targetProxy.requests.map((q) => `${q.method} ${decodeURIComponent(q.path)} ${q.status}`);
  assert.ok(!log.some((l) => l.startsWith('PUT ') && l.includes(baseLayer)), log.join('\n'));
  assert.equal(await client.hasBlob({ registry: target.host, repository: 'overlap/failed' }, baseLayer), false);
});

// The config names the layer's diffID, known once the layer's pass has read every file; its
// upload then runs beside the layer's commit instead of after it (two round trips fewer at the
// end of every push). The registry's answer to the layer's body is held back here, so the config
// is put while the layer is still uncommitted.
test("the config is uploaded while the new layer's upload is being committed", async () => {
  sourceProxy.reset();
  targetProxy.reset();
  // The target has the base's layer already, so the only sessions are the layer's and the
  // config's. The first POST to arrive is held a little: the two are opened side by side (the
  // second on a connection of its own), and neither may then reach the registry after the PATCH.
  const baseBytes = await new RegistryClient().getBlobBytes({ registry: source.host, repository: 'base/busybox' }, baseLayer);
  await new RegistryClient().uploadBlob({ registry: target.host, repository: 'overlap/config' }, { bytes: baseBytes });
  targetProxy.failNext(1, { delayMs: 300, method: 'POST' });
  // The base is held 1 s: a config session opened only once the config is known comes after the PATCH.
  sourceProxy.failNext(1, { delayMs: 1000, method: 'GET', match: /\/manifests\// });
  targetProxy.failNext(1, { delayMs: 2000, method: 'PATCH' });
  const result = await build(request(`${targetProxy.host}/overlap/config:1`), { registry: new RegistryClient() });
  const { manifest } = await new RegistryClient().getManifest({ registry: target.host, repository: 'overlap/config' }, result.digest);
  const { config, layers } = manifest as ImageManifest;
  const log = targetProxy.requests.map((q) => `${q.method} ${decodeURIComponent(q.path)} ${q.status}`);
  const put = (digest: string): number => log.findIndex((l) => l.startsWith('PUT /v2/overlap/config/blobs/uploads/') && l.includes(`digest=${digest} 201`));
  const configPut = put(config.digest);
  const layerPut = put(layers.at(-1)!.digest);
  assert.ok(configPut >= 0 && layerPut >= 0, log.join('\n'));
  assert.ok(configPut < layerPut, `config committed before the layer:\n${log.join('\n')}`);
  assert.ok(!log.some((l) => l.startsWith(`HEAD /v2/overlap/config/blobs/${config.digest}`)), `a config is put without a HEAD first:\n${log.join('\n')}`);
  // Its session was opened at the start, beside the layer's: the config then took one request.
  const patch = log.findIndex((l) => l.startsWith('PATCH '));
  assert.equal(log.filter((l) => l.startsWith('POST ')).length, 2, log.join('\n'));
  assert.equal(log.slice(0, patch).filter((l) => l.startsWith('POST /v2/overlap/config/blobs/uploads/ ')).length, 2, log.join('\n'));
  assert.equal(targetProxy.pendingFaults(), 0);
  assert.equal(sourceProxy.pendingFaults(), 0);
});

// The new layer's pass starts while its upload session is being opened: the ping, token and
// POST round trips to the target come before the first byte is sent, no longer before the first
// byte is made. The target's POST is held here; the file must be read before it is answered.
test("the new layer's files are read while its upload session is being opened", async () => {
  sourceProxy.reset();
  targetProxy.reset();
  targetProxy.failNext(1, { delayMs: 1000, method: 'POST', match: /\/v2\/overlap\/early\/blobs\/uploads\/$/ });
  const local = localSource([{ from: 'hello', to: '' }], { cwd: work.path });
  const postAnswered: boolean[] = [];
  const files = Object.assign(
    async function* () {
      for await (const entry of local()) {
        const open = entry.open;
        yield !open ? entry : {
          ...entry,
          open: (...args: Parameters<typeof open>) => {
            postAnswered.push(targetProxy.requests.some((q) => q.method === 'POST' && q.status !== undefined));
            return open(...args);
          },
        };
      }
    },
    { check: local.check },
  );
  await build({ ...request(`${targetProxy.host}/overlap/early:1`), files }, { registry: new RegistryClient() });
  assert.equal(targetProxy.pendingFaults(), 0);
  assert.deepEqual(postAnswered, [false], 'the file was read before the POST was answered');
});

// The new layer streams while the base is resolved, but its upload is committed only once the
// base is known to be usable: a build that fails on its base leaves an upload session the
// registry expires, not a blob (nor, on distribution, a repository) in the target.
for (const [name, base, platforms, tarball, error] of [
  ['a base that does not exist', 'base/busybox:nope', 'default', false, /base\/busybox:nope not found/],
  ['several platforms for a docker tarball (a usage error)', 'base/multi:1', 'all', true, /a docker tarball holds a single platform/],
] as const) {
  test(`${name}: the new layer's upload is not committed`, async () => {
    sourceProxy.reset();
    targetProxy.reset();
    sourceProxy.failNext(1, { delayMs: 1000, method: 'GET', match: new RegExp(`/${base.replace(':', '/manifests/')}$`) });
    const repository = `unused/${tarball ? 'tarball' : 'missing'}`;
    const req = request(`${targetProxy.host}/${repository}:1`, base, platforms);
    const outputs = { ...req.outputs, ...(tarball ? { tarball: path.join(work.path, 'image.tar') } : {}) };
    await assert.rejects(build({ ...req, outputs }, { registry: new RegistryClient({ retry: { attempts: 1 } }) }), error);
    const log = targetProxy.requests.map((q) => `${q.method} ${q.path} ${q.status}`);
    assert.ok(log.some((l) => l.startsWith(`PATCH /v2/${repository}/blobs/uploads/`)), `the layer was uploaded meanwhile:\n${log.join('\n')}`);
    assert.ok(!log.some((l) => l.startsWith('PUT ')), `nothing committed:\n${log.join('\n')}`);
    assert.ok(log.some((l) => l.startsWith(`DELETE /v2/${repository}/blobs/uploads/`)), `the session reserved for the config is cancelled:\n${log.join('\n')}`);
    const catalog = (await (await fetch(`${target.url}/v2/_catalog`)).json()) as { repositories: string[] };
    assert.ok(!catalog.repositories.includes(repository), catalog.repositories.join(' '));
  });
}

// A base blob copied from another registry is the body of the target's upload: when the source
// drops the connection halfway, the error must say so, not blame the target's PUT alone.
test('a base registry that drops a blob copy halfway is named in the error', async () => {
  sourceProxy.reset();
  targetProxy.reset();
  sourceProxy.failNext(1, { cutAnswerAfterBytes: 1000, method: 'GET', match: new RegExp(`/blobs/${baseLayer}$`) });
  const client = new RegistryClient({ retry: { attempts: 1 } });
  await assert.rejects(build(request(`${targetProxy.host}/overlap/cut:1`), { registry: client }), (err: Error) => {
    assert.match(err.message, new RegExp(`reading blob ${baseLayer} from ${sourceProxy.host}/base/busybox: `), err.message);
    return true;
  });
  assert.equal(sourceProxy.pendingFaults(), 0);
  // With retries, the copy is tried again and the push succeeds.
  sourceProxy.failNext(1, { cutAnswerAfterBytes: 1000, method: 'GET', match: new RegExp(`/blobs/${baseLayer}$`) });
  await build(request(`${targetProxy.host}/overlap/cut:1`), { registry: new RegistryClient() });
  assert.equal(sourceProxy.pendingFaults(), 0);
  assert.equal(await client.hasBlob({ registry: target.host, repository: 'overlap/cut' }, baseLayer), true);
});

// A base blob copy's download starts while its upload session is being opened. When that POST
// fails (a 503 the step retries), the download opened for it must stop with it: else it is
// still running (and waiting on the base registry) after build() has settled.
test("a blob copy's download stops when its upload session cannot be opened", async () => {
  sourceProxy.reset();
  targetProxy.reset();
  // The base's manifest is held back so the target's first POSTs (layer, reservation) are answered first.
  sourceProxy.failNext(1, { delayMs: 300, method: 'GET', match: /\/manifests\/1$/ });
  sourceProxy.failNext(1, { delayMs: 4000, method: 'GET', match: new RegExp(`/blobs/${baseLayer}$`) });
  const logger = {
    debug() {},
    warn() {},
    info(message: string) {
      // The next POST to the target is the base layer copy's.
      if (message === 'base resolved') targetProxy.failNext(1, { status: 503, method: 'POST', match: /\/blobs\/uploads\/$/ });
    },
  };
  const client = new RegistryClient({ retry: { baseDelayMs: 1, maxDelayMs: 1, jitter: false } });
  await build(request(`${targetProxy.host}/overlap/copy-retried:1`), { registry: client, logger });
  assert.equal(targetProxy.pendingFaults(), 0);
  assert.equal(sourceProxy.pendingFaults(), 0);
  const posts = targetProxy.requests.filter((q) => q.method === 'POST').map((q) => q.status);
  assert.deepEqual(posts.filter((s) => s === 503).length, 1, posts.join(' '));
  // A probe of the base registry is the only request it has open (the held download was dropped).
  await sleep(100);
  await (await fetch(`${sourceProxy.url}/v2/`)).body?.cancel();
  assert.equal(sourceProxy.requests.at(-1)!.inFlight, 1, 'a download is still running after build() settled');
});

// With one upload at a time the config waits behind the new layer's upload; when the layer
// fails, the config's turn comes under the aborted signal and puts nothing into the session
// reserved for it. That session is still cancelled, as on every other failure path.
test("a layer that fails before the config's turn: the session reserved for the config is cancelled", async () => {
  sourceProxy.reset();
  targetProxy.reset();
  targetProxy.failNext(1, { delayMs: 600, status: 400, method: 'PATCH' });
  const client = new RegistryClient({ retry: { attempts: 1 } });
  await assert.rejects(build(request(`${targetProxy.host}/overlap/queued:1`), { registry: client, concurrency: 1 }), /pushing new layer .*PATCH .* returned 400/);
  const log = targetProxy.requests.map((q) => `${q.method} ${q.path.split('?')[0]} ${q.status}`);
  const sessions = targetProxy.requests.filter((q) => q.method === 'POST').length;
  assert.equal(sessions, 2, log.join('\n')); // the layer's and the reserved one
  assert.ok(!log.some((l) => l.startsWith('PUT ')), log.join('\n'));
  assert.ok(log.some((l) => /^DELETE \/v2\/overlap\/queued\/blobs\/uploads\/\S+ 20\d$/.test(l)), `the reserved session is cancelled:\n${log.join('\n')}`);
});
