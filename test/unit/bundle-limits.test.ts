import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { createGzip, gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { SourceError } from '../../src/errors.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import { createLayer } from '../../src/layer/layer.ts';
import { LAYER_LIMITS, MAX_LAYER_PATH_BYTES } from '../../src/layer/tar.ts';
import { bundleEntries, bundlePath } from '../../src/source/bundle.ts';
import { expandSparse, type Sparse } from '../../src/source/sparse.ts';
import { tarOf } from '../support/bundles.ts';

/** Every entry of a bundle held in memory, each file's content read. */
async function entriesOf(bytes: Buffer): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for await (const e of bundleEntries(async () => Readable.from([bytes]), { to: '/app', origin: 'gs://b/t.tar' })) {
    if (e.open) for await (const _ of (await e.open()) as AsyncIterable<Buffer>);
    out.push(e);
  }
  return out;
}

async function refuses(bytes: Buffer, message: RegExp): Promise<void> {
  await assert.rejects(entriesOf(bytes), (err: unknown) => {
    assert.ok(err instanceof SourceError, `expected a SourceError, got ${String(err)}`);
    assert.equal(err.code, 'ARTIFICER_SOURCE');
    assert.match(err.message, message);
    assert.ok(err.message.length < 400, `message is ${err.message.length} characters long`);
    return true;
  });
}

describe('bundle entry names: PATH_MAX bytes, 256 components', () => {
  test('a 4 MB PAX name is refused at once, naming the entry by its first characters', async () => {
    // As a PAX record: tar-stream's packer takes minutes to try fitting a 4 MB name into ustar.
    const gz = gzipSync(await tarOf([[{ name: 'f', pax: { path: 'a/'.repeat(2_000_000) + 'f' } }, 'x']]));
    assert.ok(gz.length < 100_000, 'a small upload');
    const started = Date.now();
    await refuses(gz, /^gs:\/\/b\/t\.tar#(a\/){60}…: entry name is 4000001 bytes long; at most 4096 are allowed$/);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  });
  test('limits count UTF-8 bytes and components; the limits themselves are fine', async () => {
    const deepest = Array.from({ length: 255 }, () => 'd').join('/'); // + "app/" = 256 in the layer
    const longest = 'x'.repeat(4096 - 'app/'.length);
    const ok = await entriesOf(await tarOf([[{ name: deepest, type: 'directory' }], [{ name: longest }, '']]));
    assert.deepEqual(ok.map((e) => e.path), [`app/${deepest}`, `app/${longest}`]);
    await refuses(await tarOf([[{ name: 'é'.repeat(2049) }, '']]), /entry name is 4098 bytes long; at most 4096/);
    await refuses(await tarOf([[{ name: Array.from({ length: 257 }, () => 'd').join('/'), type: 'directory' }]]), /entry name has 257 components; at most 256/);
  });
  test('limits apply to the path as it lands: a "./" tar (tar -C dir -cf x.tar .) of a 256-deep tree is fine', () => {
    const deep = `${'d/'.repeat(255)}f`;
    assert.equal(bundlePath(`./${deep}`, 'b.tar'), deep);
    assert.equal(bundlePath(`./${'d/'.repeat(256)}`, 'b.tar'), 'd/'.repeat(256).slice(0, -1));
    assert.throws(() => bundlePath(`./${'d/'.repeat(256)}f`, 'b.tar'), /257 components; at most 256/);
  });

  test('bundlePath: a long hardlink target is refused as such', () => {
    assert.throws(() => bundlePath('t'.repeat(5000), 'x', 'hardlink target'), /^SourceError: x#t{120}…: hardlink target is 5000 bytes long/);
  });
});

describe('a bundle bomb of long names', () => {
  // Names that differ in their last digits compress to a few bytes each: 9,000 of them are
  // ~250 KB to upload and 36 MB of paths, which the layer writer (and the bundle reader, for
  // its hardlinks) remember. 60,000 held 490 MiB: a 512 MiB Cloud Function was killed.
  const bomb = async (): Promise<Buffer> => {
    const pack = tarStream.pack();
    const gz = pack.pipe(createGzip());
    const chunks: Buffer[] = [];
    const read = (async () => {
      for await (const c of gz as AsyncIterable<Buffer>) chunks.push(c);
    })();
    const dir = 'a'.repeat(3990);
    for (let i = 0; i < 9000; i++) pack.entry({ name: 'f', size: 0, mtime: new Date(0), pax: { path: `${dir}/${i}` } } as tarStream.Header, '');
    pack.finalize();
    await read;
    return Buffer.concat(chunks);
  };
  const sourceOf = (bundle: Buffer) => Object.assign(() => bundleEntries(async () => Readable.from([bundle]), { to: '/app', origin: 'gs://b/bomb.tar.gz' }), {});

  test("with the Cloud Function's LAYER_LIMITS, a small .tar.gz of many 4,000-byte names is refused once the layer's paths pass the limit, before they fill the memory", { timeout: 60_000 }, async () => {
    const bundle = await bomb();
    assert.ok(bundle.length < 400_000, `a small upload (${bundle.length} bytes)`);
    await assert.rejects(createLayer(sourceOf(bundle), { mtime: 0 }, { limits: LAYER_LIMITS }).measure(), (err: unknown) => {
      assert.ok(err instanceof SourceError, String(err));
      assert.match(err.message, new RegExp(`^gs://b/bomb\\.tar\\.gz#a{120}…: the paths of the layer's files and directories add up to more than ${MAX_LAYER_PATH_BYTES} bytes`));
      return true;
    });
  });

  test('without limits (the CLI and library default: their caller owns the files and the memory) the same layer builds', { timeout: 60_000 }, async () => {
    const { size } = await createLayer(sourceOf(await bomb()), { mtime: 0 }).measure();
    assert.ok(size > 0);
  });
});

describe('bundle entries named after the root', () => {
  for (const name of ['.', './']) {
    test(`a symlink or hardlink named ${JSON.stringify(name)} is refused (it would replace the "to" directory)`, async () => {
      await refuses(
        await tarOf([[{ name: 'x' }, 'hi'], [{ name, type: 'symlink', linkname: '/tmp' }]]),
        new RegExp(`^gs://b/t\\.tar#${name.replace('.', '\\.')}: a symlink cannot be named after the bundle's root: it would replace /app itself`),
      );
      await refuses(await tarOf([[{ name: 'x' }, 'hi'], [{ name, type: 'link', linkname: 'x' }]]), /a hardlink cannot be named after the bundle's root/);
    });
  }
  test('a file named "." is refused; a directory named "." is skipped', async () => {
    await refuses(await tarOf([[{ name: './' }, 'hi']]), /a file cannot be named after the bundle's root/);
    const entries = await entriesOf(await tarOf([[{ name: './', type: 'directory' }], [{ name: './x' }, 'hi']]));
    assert.deepEqual(entries.map((e) => [e.path, e.type]), [['app/x', 'file']]);
  });
});

describe('bundle link targets are kept verbatim or refused', () => {
  // A PAX linkpath record can carry a NUL; a ustar field would end there.
  test('a symlink target with a NUL is refused, not cut at the NUL', async () => {
    await refuses(
      await tarOf([[{ name: 's', type: 'symlink', linkname: 'x', pax: { linkpath: 'abc\0def' } }]]),
      /^gs:\/\/b\/t\.tar#s: symlink target "abc\\x00def" contains a NUL character$/,
    );
  });
  test('a hardlink target with a NUL is refused', async () => {
    await refuses(await tarOf([[{ name: 'x' }, 'hi'], [{ name: 'h', type: 'link', linkname: 'x', pax: { linkpath: 'x\0y' } }]]), /#x\\x00y: hardlink target contains a NUL character/);
  });
  test('a symlink target over 4096 bytes is refused; 4096 bytes are kept', async () => {
    await refuses(await tarOf([[{ name: 's', type: 'symlink', linkname: '/'.repeat(4097) }]]), /symlink target "\/{120}…" is 4097 bytes long/);
    const [s] = await entriesOf(await tarOf([[{ name: 's', type: 'symlink', linkname: '../'.repeat(1365) + 'x' }]]));
    assert.equal(s?.linkname, '../'.repeat(1365) + 'x');
  });
});

describe('a bundle without any tar header', () => {
  test('0 bytes is not a .tar', async () => {
    await refuses(Buffer.alloc(0), /^gs:\/\/b\/t\.tar: not a valid \.tar bundle: it holds no tar data at all \(0 bytes\)/);
  });
  test('a gzip of nothing is not a .tar.gz', async () => {
    await refuses(gzipSync(Buffer.alloc(0)), /not a valid \.tar\.gz bundle: it holds no tar data at all \(a gzip of nothing\)/);
  });
  test('a tar of only end-of-archive blocks is an empty bundle (GNU tar reads it too)', async () => {
    const empty = await tarOf([]);
    assert.ok(empty.length >= 1024 && empty.every((b) => b === 0));
    assert.deepEqual(await entriesOf(empty), []);
    assert.deepEqual(await entriesOf(gzipSync(empty)), []);
  });
});

describe('reading a bundle', () => {
  test('a consumer that skips file contents still gets every entry: an unread one is drained', { timeout: 10_000 }, async () => {
    const tar = await tarOf([[{ name: 'a' }, 'x'.repeat(100_000)], [{ name: 'b' }, 'y'], [{ name: 'c/', type: 'directory' }]]);
    const paths: string[] = [];
    for await (const e of bundleEntries(async () => Readable.from([tar]), { to: '/', origin: 'mem' })) paths.push(e.path);
    assert.deepEqual(paths, ['a', 'b', 'c']);
  });

  test('a failure of the bundle\'s byte stream is reported as mapReadError makes it, not as a bad bundle', async () => {
    // The Cloud Function maps a storage failure to a temporary error (worth a retry); called "not
    // a valid bundle", it would be a permanent failure of the user's upload.
    const tar = await tarOf([[{ name: 'a' }, 'x'.repeat(100_000)], [{ name: 'b' }, 'y']]);
    const mapped = new SourceError('gs://b/t.tar', 'reading bundle: connection reset', { temporary: true });
    for (const cut of [700, 60_000, tar.length]) {
      const broken = () =>
        new Readable({
          read() {
            this.push(tar.subarray(0, cut));
            this.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
          },
        });
      const entries = bundleEntries(async () => broken(), { to: '/', origin: 'gs://b/t.tar', mapReadError: () => mapped });
      await assert.rejects(
        (async () => {
          for await (const e of entries) if (e.open) for await (const _ of (await e.open()) as AsyncIterable<Buffer>);
        })(),
        (err: unknown) => err === mapped,
        `cut after ${cut} bytes`,
      );
    }
  });

  test('a plain tar whose first name starts with byte 0x1f is not taken for gzip (1f 8b is)', async () => {
    const entries = await entriesOf(await tarOf([[{ name: '\x1fodd' }, 'hi']]));
    assert.deepEqual(entries.map((e) => e.path), ['app/\x1fodd']);
  });
});

test('a directory header\'s size field carries no data (tar-stream and Go read it so): the end search does not skip it', async () => {
  // A size of 512 on the directory: followed as data, the end-of-archive search would skip the
  // next header and take z's 1,024 zero bytes for the end marker, and 'last' would be lost.
  const tar = await tarOf([[{ name: 'd/', type: 'directory' }], [{ name: 'z' }, '\0'.repeat(1024)], [{ name: 'last' }, 'ok']]);
  tar.write('00000001000\0', 124, 'latin1');
  tar.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[i]!;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  assert.deepEqual((await entriesOf(tar)).map((e) => [e.path, e.size]), [['app/d', 0], ['app/z', 1024], ['app/last', 2]]);
});

describe('sparse expansion: the cap and the map', () => {
  const GiB = 1024 ** 3;
  async function* bytes(n: number): AsyncIterable<Buffer> {
    if (n > 0) yield Buffer.alloc(n, 'd');
  }
  /** The first chunk `expandSparse` yields (then stops it), or the SourceError it throws. */
  async function first(sparse: Sparse, stored: number): Promise<number> {
    const it = expandSparse(bytes(stored), sparse, stored, 'gs://b/t.tar#s');
    try {
      const step = await it.next();
      return step.done ? 0 : step.value.length;
    } finally {
      await it.return(undefined);
    }
  }
  const refused = (message: RegExp) => (err: unknown) => err instanceof SourceError && message.test(err.message);

  test('expands up to 1 GiB + 1,024 times the stored bytes, and refuses one byte more', async () => {
    assert.ok((await first({ name: 's', size: GiB, map: [[GiB, 0]] }, 0)) > 0, 'exactly 1 GiB of holes is expanded');
    await assert.rejects(first({ name: 's', size: GiB + 1, map: [[GiB + 1, 0]] }, 0), refused(/^gs:\/\/b\/t\.tar#s: is a sparse file of 1073741825 bytes holding 0: at most 1073741824 \(1 GiB \+ 1024 times the stored bytes\)/));
    assert.ok((await first({ name: 's', size: GiB + 10 * 1024, map: [[0, 10]] }, 10)) > 0, '10 bytes stored allow 10 KiB more');
    await assert.rejects(first({ name: 's', size: GiB + 10 * 1024 + 1, map: [[0, 10]] }, 10), refused(/holding 10: at most 1073752064 /));
  });

  test('a map whose fragments overlap or pass the end of the file is refused', async () => {
    await assert.rejects(first({ name: 's', size: 100, map: [[0, 10], [5, 10]] }, 20), refused(/sparse map is invalid: fragment at 5 \(\+10\) overlaps another or lies past the file's end \(100\)$/));
    await assert.rejects(first({ name: 's', size: 100, map: [[95, 10]] }, 10), refused(/sparse map is invalid: fragment at 95 \(\+10\)/));
  });
});
