import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { SourceError } from '../../src/errors.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import { createLayer } from '../../src/layer/layer.ts';
import { packEntries } from '../../src/layer/tar.ts';
import { sha256 } from '../../src/oci/digest.ts';
import { localSource } from '../../src/source/local.ts';
import { tempDir } from '../support/tmp.ts';


/** Bytes that differ from chunk to chunk, so a reused read buffer would show in the digests. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + (i >>> 10) * 7 + seed) & 0xff;
  return b;
}

async function tree(dir: string, opts: { mtime: number; uid: number }): Promise<void> {
  await mkdir(path.join(dir, 'app/static'), { recursive: true });
  await mkdir(path.join(dir, 'app/many'), { recursive: true });
  await writeFile(path.join(dir, 'app/server'), '#!/bin/sh\nexec echo served\n');
  await chmod(path.join(dir, 'app/server'), 0o755);
  await writeFile(path.join(dir, 'app/static/big.bin'), pattern(3 * 1024 * 1024 + 7, 1));
  await writeFile(path.join(dir, 'app/static/index.html'), '<h1>hi</h1>\n');
  // More small-file bytes than one pool slab holds, so slabs are recycled during the pass.
  const many = Array.from({ length: 300 }, (_, i) => `app/many/f${String(i).padStart(3, '0')}`);
  for (const [i, p] of many.entries()) await writeFile(path.join(dir, p), pattern(10_000 + i, i));
  for (const p of [...many, 'app/many', 'app/server', 'app/static/big.bin', 'app/static/index.html', 'app/static', 'app']) {
    await utimes(path.join(dir, p), opts.mtime, opts.mtime);
    await chown(path.join(dir, p), opts.uid, opts.uid);
  }
}

describe('createLayer', () => {
  it('digest = sha256(gzip), diffId = sha256(tar), size = gzip length; the gzip decompresses to the tar', async () => {
    await using t = await tempDir('layer');
    await tree(t.path, { mtime: 1_000_000, uid: 0 });
    const files = localSource([{ from: 'app', to: '/srv/' }], { cwd: t.path });
    const layer = createLayer(files, { mtime: 0 });
    const { stream, done } = layer.open();
    const gz = await buffer(stream);
    const d = await done;
    const tar = await buffer(packEntries(files(), { mtime: 0 }));
    assert.equal(d.digest, sha256(gz));
    assert.equal(d.size, gz.length);
    assert.equal(d.diffId, sha256(tar));
    assert.ok(gunzipSync(gz).equals(tar));
    assert.ok(execFileSync('gzip', ['-dc'], { input: gz, maxBuffer: 64 << 20 }).equals(tar));
    assert.deepEqual(layer.known(), d);
  });

  it('same content with different mtimes and owners on disk → the same layer digest', async () => {
    await using a = await tempDir('layer-a');
    await using b = await tempDir('layer-b');
    await tree(a.path, { mtime: 1_000_000, uid: 0 });
    await tree(b.path, { mtime: 1_600_000_000, uid: 4242 });
    const policy = { mtime: 1_700_000_000 };
    const da = await createLayer(localSource([{ from: 'app', to: '' }], { cwd: a.path }), policy).measure();
    const db = await createLayer(localSource([{ from: 'app', to: '' }], { cwd: b.path }), policy).measure();
    assert.deepEqual(da, db);
    // …and the policy does matter: another mtime is another layer.
    const dc = await createLayer(localSource([{ from: 'app', to: '' }], { cwd: b.path }), { mtime: 1 }).measure();
    assert.notEqual(dc.diffId, da.diffId);
  });

  it('re-opens to byte-identical output; measure() uses the first complete pass', async () => {
    await using t = await tempDir('layer-reopen');
    await writeFile(path.join(t.path, 'r'), randomBytes(2 * 1024 * 1024));
    const layer = createLayer(localSource([{ from: 'r', to: '' }], { cwd: t.path }), { mtime: 0 });
    const m = await layer.measure();
    const first = layer.open();
    const second = layer.open();
    const [x, y] = await Promise.all([buffer(first.stream), buffer(second.stream)]);
    assert.ok(x.equals(y));
    assert.deepEqual(await first.done, m);
    assert.deepEqual(await layer.measure(), m);
  });

  it('measure() after a complete pass reads nothing: it returns that pass\'s digests', async () => {
    await using t = await tempDir('layer-measure');
    await writeFile(path.join(t.path, 'f'), 'one');
    let passes = 0;
    const files = localSource([{ from: 'f', to: '' }], { cwd: t.path });
    const counted = Object.assign(() => (passes++, files()), {});
    const layer = createLayer(counted, { mtime: 0 });
    const { stream, done } = layer.open();
    stream.resume();
    const first = await done;
    await writeFile(path.join(t.path, 'f'), 'two');
    assert.deepEqual(await layer.measure(), first);
    assert.equal(passes, 1);
  });

  it('fails a later pass when the files changed since an earlier one', async () => {
    await using t = await tempDir('layer-changed');
    await writeFile(path.join(t.path, 'f'), 'one');
    const layer = createLayer(localSource([{ from: 'f', to: '' }], { cwd: t.path }), { mtime: 0 });
    await layer.measure();
    await writeFile(path.join(t.path, 'f'), 'two');
    const { stream, done } = layer.open();
    stream.resume();
    await assert.rejects(done, (err: unknown) => err instanceof SourceError && /files changed while the image was being built/.test(err.message));
  });

  it('rejects done and errors the stream when a file disappears mid-build', async () => {
    await using t = await tempDir('layer-vanish');
    await writeFile(path.join(t.path, 'a'), 'a');
    await writeFile(path.join(t.path, 'b'), Buffer.alloc(2 * 1024 * 1024));
    const files = localSource([{ from: '.', to: '/d' }], { cwd: t.path });
    // Delete b after the walk validated it, before its bytes are read.
    const flaky = async function* (): AsyncIterable<LayerEntry> {
      for await (const e of files()) {
        if (e.path === 'd/b') await rm(path.join(t.path, 'b'));
        yield e;
      }
    };
    const { stream, done } = createLayer(flaky, { mtime: 0 }).open();
    const streamErr = buffer(stream).then(
      () => undefined,
      (e: unknown) => e,
    );
    await assert.rejects(done, (err: unknown) => err instanceof SourceError && err.message === 'b: no such file or directory');
    assert.ok((await streamErr) instanceof Error, 'the stream errors too');
  });

  it('rejects with AbortedError when the signal fires', async () => {
    await using t = await tempDir('layer-abort');
    await writeFile(path.join(t.path, 'big'), randomBytes(8 * 1024 * 1024));
    const ac = new AbortController();
    const { stream, done } = createLayer(localSource([{ from: 'big', to: '' }], { cwd: t.path }), { mtime: 0 }, { signal: ac.signal }).open();
    stream.once('data', () => ac.abort());
    stream.resume();
    await assert.rejects(done, { code: 'ARTIFICER_ABORTED' });
  });

  it('nothing is produced for a bad input: the stream fails before any byte', async () => {
    await using t = await tempDir('layer-bad');
    await writeFile(path.join(t.path, 'ok'), 'fine');
    execFileSync('mkfifo', [path.join(t.path, 'pipe')]);
    const { stream, done } = createLayer(localSource([{ from: '.', to: '/x' }], { cwd: t.path }), { mtime: 0 }).open();
    let bytes = 0;
    stream.on('data', (b: Buffer) => (bytes += b.length));
    stream.on('error', () => {});
    await assert.rejects(done, /pipe: is a FIFO/);
    assert.equal(bytes, 0);
  });
});
