// Bundles as real tools write them (GNU tar, bsdtar, gzip, zstd, bzip2, xz, python3's tarfile),
// re-packed and compared with what GNU tar reads from them or with the same tree given to -f.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { SourceError } from '../../src/errors.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import { createLayer } from '../../src/layer/layer.ts';
import { bundleEntries } from '../../src/source/bundle.ts';
import { localSource } from '../../src/source/local.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

let tmp: TempDir;
before(async () => {
  tmp = await tempDir('bundle-formats');
});
after(() => tmp.remove());

/** Runs a tool in the temp dir and returns its stdout. */
function run(cmd: string, args: string[], input?: Buffer): Buffer {
  return execFileSync(cmd, args, { cwd: tmp.path, input, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } });
}

/** A tree under the temp dir: names ending in '/' are directories, `{ symlink }` links, else file contents. */
async function tree(root: string, files: Record<string, string | { symlink: string }>): Promise<string> {
  const dir = path.join(tmp.path, root);
  await mkdir(dir, { recursive: true });
  for (const [name, what] of Object.entries(files)) {
    const p = path.join(dir, name);
    await mkdir(path.dirname(p), { recursive: true });
    if (name.endsWith('/')) await mkdir(p, { recursive: true });
    else if (typeof what === 'string') await writeFile(p, what);
    else run('ln', ['-s', what.symlink, p]);
  }
  return dir;
}

const bundle = (bytes: Buffer) => () => bundleEntries(async () => Readable.from([bytes]), { to: '/app', origin: 'gs://b/t.tar' });

/** Every entry of a bundle, with each file's content read, as [path, type, content or link]. */
async function entriesOf(bytes: Buffer): Promise<Array<[string, string, string]>> {
  const out: Array<[string, string, string]> = [];
  for await (const e of bundle(bytes)() as AsyncIterable<LayerEntry>) {
    let body = '';
    if (e.open) for await (const c of (await e.open()) as AsyncIterable<Buffer>) body += c.toString('latin1');
    out.push([e.path, e.type, e.linkname ?? body]);
  }
  return out;
}

async function refuses(bytes: Buffer, message: RegExp): Promise<void> {
  await assert.rejects(entriesOf(bytes), (err: unknown) => {
    assert.ok(err instanceof SourceError, `expected a SourceError, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

async function diffIdOfBundle(bytes: Buffer): Promise<string> {
  return (await createLayer(bundle(bytes), { mtime: 0 }).measure()).diffId;
}

async function diffIdOfLocal(dir: string): Promise<string> {
  return (await createLayer(localSource([{ from: './', to: '/app' }], { cwd: dir }), { mtime: 0 }).measure()).diffId;
}

describe('bundle compression is read from the bytes, not the name', () => {
  let tar: Buffer;
  before(async () => {
    await tree('c', { 'd/f': 'hello\n' });
    tar = run('tar', ['-C', 'c', '-cf', '-', 'd']);
  });

  test('a plain tar and a gzip of it give the same entries, whatever the bundle is called', async () => {
    const expected = [['app/d', 'directory', ''], ['app/d/f', 'file', 'hello\n']];
    assert.deepEqual(await entriesOf(tar), expected);
    assert.deepEqual(await entriesOf(run('gzip', ['-c'], tar)), expected);
  });

  for (const [tool, name] of [['zstd', 'zstd'], ['bzip2', 'bzip2'], ['xz', 'xz']] as const) {
    test(`a ${name}-compressed bundle is refused, naming ${name}`, async () => {
      await refuses(run(tool, ['-c'], tar), new RegExp(`^gs://b/t\\.tar: is ${name}-compressed; bundles may be \\.tar or gzip-compressed \\.tar$`));
    });
  }

  test('a gzip of something else, or neither tar nor gzip, is not a tar archive', async () => {
    await refuses(run('gzip', ['-c'], Buffer.from('x'.repeat(1000))), /^gs:\/\/b\/t\.tar: is gzip-compressed but is not a tar archive: its first block is not a tar header/);
    await refuses(run('gzip', ['-c'], run('xz', ['-c'], tar)), /is gzip-compressed but is xz-compressed/);
    await refuses(Buffer.from('PK\x03\x04 a zip'), /is not a tar archive: it holds 10 bytes, less than one tar header/);
  });
});

/** `tar tf`'s listing, as layer paths under /app. */
function listed(tar: Buffer): string[] {
  return run('tar', ['-tf', '-'], tar)
    .toString()
    .split('\n')
    .filter((n) => n !== '' && n !== './')
    .map((n) => `app/${n.replace(/^\.\//, '').replace(/\/$/, '')}`);
}

describe('a bundle ends at its end-of-archive marker, as GNU tar reads it', () => {
  let a: Buffer;
  let b: Buffer;
  before(async () => {
    // PAX and GNU long names (their data is not a header), contents not a multiple of 512 bytes.
    await tree('ea', { [`${'n'.repeat(150)}/f`]: 'x'.repeat(700), 'g/': '' });
    await tree('eb', { 'second/f': 'y'.repeat(1500) });
    a = run('tar', ['--format=posix', '--sort=name', '-C', 'ea', '-cf', '-', '.']);
    b = run('tar', ['--format=gnu', '--sort=name', '-C', 'eb', '-cf', '-', '.']);
  });

  test('cat a.tar b.tar: only what tar tf lists (a\'s entries)', async () => {
    for (const first of [a, run('tar', ['--format=gnu', '--sort=name', '-C', 'ea', '-cf', '-', '.'])]) {
      const cat = Buffer.concat([first, b]);
      const paths = (await entriesOf(cat)).map(([p]) => p);
      assert.deepEqual(paths, listed(cat));
      assert.ok(!paths.some((p) => p.includes('second')));
      // The marker found across chunk boundaries too, and through gzip.
      const chunked = () => bundleEntries(async () => Readable.from(Array.from({ length: Math.ceil(cat.length / 100) }, (_, i) => cat.subarray(i * 100, i * 100 + 100))), { to: '/app', origin: 'x' });
      assert.equal((await createLayer(chunked, { mtime: 0 }).measure()).diffId, await diffIdOfBundle(first));
      assert.deepEqual((await entriesOf(run('gzip', ['-c'], cat))).map(([p]) => p), paths);
    }
  });

  test('the bytes after the marker are still read to the end: a damaged gzip there fails the bundle', async () => {
    // The gzip trailer (CRC-32 and length) and a download's own checksum come at the very end;
    // stopping at the marker would accept a bundle cut short or corrupted after it.
    const gz = run('gzip', ['-c'], Buffer.concat([a, b]));
    await refuses(gz.subarray(0, gz.length - 8), /unexpected end of file/);
    const bad = Buffer.from(gz);
    bad[bad.length - 8] = bad[bad.length - 8]! ^ 0xff; // the CRC-32 of the uncompressed bytes
    await refuses(bad, /incorrect data check/);
    assert.equal((await entriesOf(gz)).length, (await entriesOf(a)).length, 'intact, it still ends at the marker');
  });

  test('notes appended after the marker are ignored, as GNU tar ignores them', async () => {
    const noted = Buffer.concat([a, Buffer.from('notes\n')]);
    run('tar', ['-tf', '-'], noted); // GNU tar accepts it
    assert.equal(await diffIdOfBundle(noted), await diffIdOfBundle(a));
  });

  describe('a lone zero block where a header is due', () => {
    // x.tar: x's header, its data block, then the marker and GNU tar's zero padding to 10 KiB.
    let x: Buffer;
    let y: Buffer;
    const zero = Buffer.alloc(512);
    before(async () => {
      await tree('lz', { x: 'x\n', y: 'y\n' });
      x = run('tar', ['-C', 'lz', '-cf', '-', 'x']);
      y = run('tar', ['-C', 'lz', '-cf', '-', 'y']);
    });
    /** GNU tar's `tar tf`: exit status, stdout, stderr. */
    const gnuList = (tar: Buffer) => {
      const r = spawnSync('tar', ['-tf', '-'], { input: tar, env: { ...process.env, LC_ALL: 'C' } });
      return [r.status, r.stdout.toString(), r.stderr.toString()];
    };
    const lone = (at: number) => new RegExp(`^gs://b/t\\.tar: not a valid \\.tar(\\.gz)? bundle: a lone zero block at byte ${at} of the tar is followed by more of the archive: GNU tar and bsdtar stop reading there`);

    test('followed by another header: refused, naming its offset, where GNU tar drops the rest with only a warning', async () => {
      const spliced = Buffer.concat([x.subarray(0, 1024), zero, y]);
      // What GNU tar does with it: lists x alone, warns on stderr, and exits 0 all the same.
      assert.deepEqual(gnuList(spliced), [0, 'x\n', 'tar: A lone zero block at 3\n']);
      assert.equal(x.length, 10240, 'x.tar is padded to a 10 KiB record');
      assert.deepEqual(await entriesOf(x), [['app/x', 'file', 'x\n']], 'x.tar, padded to 10 KiB with zeros, is read');
      await refuses(spliced, lone(1024));
      await refuses(run('gzip', ['-c'], spliced), lone(1024));
      // Found across chunk boundaries too, with the zero block split between chunks.
      const chunked = () => bundleEntries(async () => Readable.from(Array.from({ length: Math.ceil(spliced.length / 100) }, (_, i) => spliced.subarray(i * 100, i * 100 + 100))), { to: '/app', origin: 'gs://b/t.tar' });
      await assert.rejects(createLayer(chunked, { mtime: 0 }).measure(), (err) => err instanceof SourceError && lone(1024).test(err.message));
    });

    test('as the first block, or followed by what is no header at all', async () => {
      await refuses(Buffer.concat([zero, y]), lone(0));
      await refuses(Buffer.concat([x.subarray(0, 1024), zero, Buffer.alloc(512, 'notes\n'), zero, zero]), lone(1024));
    });

    test('as the last block of the input it is the end, as every reader takes it', async () => {
      const ended = Buffer.concat([x.subarray(0, 1024), zero]);
      assert.deepEqual(gnuList(ended).slice(0, 2), [0, 'x\n']); // with the same warning
      assert.deepEqual(await entriesOf(ended), [['app/x', 'file', 'x\n']]);
      assert.deepEqual(await entriesOf(run('gzip', ['-c'], ended)), [['app/x', 'file', 'x\n']]);
    });
  });
});

describe('old and odd tar formats', () => {
  test('a v7 archive (tar --format=v7) re-packs as the same tree given to -f does', async () => {
    const dir = await tree('v7', { 'bin/run': '#!/bin/sh\n', 'etc/conf': 'k=v\n', 'etc/link': { symlink: 'conf' } });
    const v7 = run('tar', ['--format=v7', '--sort=name', '--owner=0', '--group=0', '-C', dir, '-cf', '-', '.']);
    assert.equal(await diffIdOfBundle(v7), await diffIdOfLocal(dir));
  });

  test('a GNU volume label (tar -V) is skipped', async () => {
    const dir = await tree('vol', { f: 'hi' });
    const labelled = run('tar', ['-V', 'my label', '-C', dir, '-cf', '-', 'f']);
    assert.deepEqual(await entriesOf(labelled), [['app/f', 'file', 'hi']]);
  });

  test('an unsupported type is named by its type flag', async () => {
    const dir = await tree('inc', { 'd/f': 'hi' });
    // --listed-incremental writes each directory as a GNU dumpdir ('D').
    const dumpdir = run('tar', ['--format=gnu', '-g', path.join(tmp.path, 'snar'), '-C', dir, '-cf', '-', 'd']);
    await refuses(dumpdir, /^gs:\/\/b\/t\.tar#d\/: unsupported tar entry type 'D'$/);
  });
});

describe('sparse files (tar --sparse, bsdtar) are expanded as Go\'s archive/tar expands them', () => {
  let dir: string;
  before(async () => {
    // Data, a hole, data not on a block boundary, a hole, data at the very end.
    dir = await tree('sparse', {});
    const f = await open(path.join(dir, 's'), 'w');
    await f.write(Buffer.alloc(1000, 'A'), 0, 1000, 0);
    await f.write(Buffer.alloc(5000, 'B'), 0, 5000, 1024 * 1024 + 100);
    await f.write(Buffer.from('end'), 0, 3, 3 * 1024 * 1024 + 4);
    await f.close();
  });

  const cases: Array<[string, string, string[]]> = [
    ['GNU tar --sparse --format=posix (format 1.0)', 'tar', ['--sparse', '--format=posix']],
    ['GNU tar --sparse --sparse-version=0.1', 'tar', ['--sparse', '--format=posix', '--sparse-version=0.1']],
    ['bsdtar --format=pax', 'bsdtar', ['--format=pax']],
  ];
  for (const [title, tool, args] of cases) {
    test(`${title}: the layer equals the one of the file added with -f`, async () => {
      const tar = run(tool, [...args, '-C', dir, '-cf', '-', '.']);
      assert.ok(tar.length < 100_000 && tar.includes('GNU.sparse.'), 'the archive holds a sparse entry');
      assert.deepEqual((await entriesOf(tar)).map(([p, t, body]) => [p, t, body.length]), [['app/s', 'file', 3 * 1024 * 1024 + 7]]);
      assert.equal(await diffIdOfBundle(tar), await diffIdOfLocal(dir));
    });
  }

  test('a sparse file far larger than the data it holds is refused before a byte of it is made', async () => {
    // 10 KiB of archive claiming a 1 PB file (a map with one empty fragment at its very end):
    // expanding it would compress zeros until the build times out.
    const bomb = run('python3', ['-c', `
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
    ti = tarfile.TarInfo('GNUSparseFile.0/s'); ti.size = 0
    ti.pax_headers = {'GNU.sparse.name': 's', 'GNU.sparse.size': '1000000000000000', 'GNU.sparse.map': '999999999999999,0'}
    t.addfile(ti, io.BytesIO(b''))
sys.stdout.buffer.write(buf.getvalue())
`]);
    await refuses(bomb, /s: is a sparse file of 1000000000000000 bytes holding 0: at most .* are expanded/);
  });

  for (const args of [['--format=gnu'], ['--format=posix', '--sparse-version=0.0']]) {
    test(`tar --sparse ${args.join(' ')} is refused, saying how to re-create the bundle`, async () => {
      const tar = run('tar', ['--sparse', ...args, '-C', dir, '-cf', '-', 's']);
      await refuses(tar, /#(GNUSparseFile\.\d+\/)?s: is a sparse file in a form that is not supported .*: re-create the bundle with --format=posix, or without --sparse$/);
    });
  }

  test('a map that does not match the data is refused', async () => {
    const tar = run('tar', ['--sparse', '--format=posix', '-C', dir, '-cf', '-', 's']);
    // The map's first fragment (offset 0, GNU tar rounds it to 4096 bytes) made one byte longer.
    const at = tar.indexOf('\n0\n4096\n');
    assert.ok(at > 0);
    const bad = Buffer.concat([tar.subarray(0, at), Buffer.from('\n0\n4097\n'), tar.subarray(at + 8)]);
    await refuses(bad, /#s: sparse map names 12296 bytes of data, but the entry holds 12295$/);
  });
});

describe('names that are not UTF-8', () => {
  test('two Latin-1 names (GNU tar of files named caf\\xe9 and caf\\xe8) are refused, not merged into one path', async () => {
    const dir = await tree('latin1', {});
    for (const [byte, body] of [[0xe9, '1'], [0xe8, '2']] as const) await writeFile(Buffer.concat([Buffer.from(path.join(dir, 'caf')), Buffer.from([byte])]), body);
    for (const format of ['gnu', 'posix']) {
      const tar = run('tar', [`--format=${format}`, '-C', dir, '-cf', '-', '.']);
      await refuses(tar, /^gs:\/\/b\/t\.tar#\.\/caf\uFFFD: the file name is not valid UTF-8, which image layer paths must be; rename it$/);
    }
  });

  test('a symlink or hardlink target that is not UTF-8 is refused', async () => {
    // python3's tarfile writes the bytes it is given (GNU tar would need such a link on disk).
    const tar = run('python3', ['-c', `
import tarfile, io, sys
b = io.BytesIO()
with tarfile.open(fileobj=b, mode='w', format=tarfile.GNU_FORMAT, encoding='utf-8', errors='surrogateescape') as t:
    s = tarfile.TarInfo('s'); s.type = tarfile.SYMTYPE; s.linkname = b'caf\\xe9'.decode('utf-8', 'surrogateescape'); t.addfile(s)
sys.stdout.buffer.write(b.getvalue())
`]);
    await refuses(tar, /#s: the symlink target is not valid UTF-8, which image layer paths must be; rename it$/);
    const hard = run('python3', ['-c', `
import tarfile, io, sys
b = io.BytesIO()
with tarfile.open(fileobj=b, mode='w', format=tarfile.GNU_FORMAT, encoding='utf-8', errors='surrogateescape') as t:
    h = tarfile.TarInfo('h'); h.type = tarfile.LNKTYPE; h.linkname = b'caf\\xe9'.decode('utf-8', 'surrogateescape'); t.addfile(h)
sys.stdout.buffer.write(b.getvalue())
`]);
    await refuses(hard, /#caf\uFFFD: the hardlink target is not valid UTF-8, which image layer paths must be; rename it$/);
  });
});

describe('hardlinks in a bundle', () => {
  test('a hardlink to a symlink (tar and bsdtar of `ln -P s s2`) lands as the symlink, as -f writes it', async () => {
    const dir = await tree('hs', { s: { symlink: 'target' } });
    run('ln', ['-P', path.join(dir, 's'), path.join(dir, 's2')]);
    const local = await diffIdOfLocal(dir);
    for (const [tool, args] of [['tar', ['--sort=name']], ['bsdtar', []]] as const) {
      const tar = run(tool, [...args, '-C', dir, '-cf', '-', 's', 's2']);
      assert.match(run('tar', ['-tvf', '-'], tar).toString(), /^h.* link to /m, `${tool} wrote a hardlink`);
      assert.deepEqual(await entriesOf(tar), [['app/s', 'symlink', 'target'], ['app/s2', 'symlink', 'target']]);
      assert.equal(await diffIdOfBundle(tar), local);
    }
  });

  test('a hardlink to a hardlink (python3 tarfile) links to the file', async () => {
    const tar = run('python3', ['-c', `
import tarfile, io, sys
b = io.BytesIO()
with tarfile.open(fileobj=b, mode='w') as t:
    f = tarfile.TarInfo('f'); f.size = 2; t.addfile(f, io.BytesIO(b'hi'))
    for name, to in (('h1', 'f'), ('h2', 'h1')):
        h = tarfile.TarInfo(name); h.type = tarfile.LNKTYPE; h.linkname = to; t.addfile(h)
sys.stdout.buffer.write(b.getvalue())
`]);
    assert.deepEqual(await entriesOf(tar), [['app/f', 'file', 'hi'], ['app/h1', 'hardlink', 'app/f'], ['app/h2', 'hardlink', 'app/f']]);
    assert.equal((await createLayer(bundle(tar), { mtime: 0 }).measure()).diffId.length, 71); // the layer writer takes it
  });
});

describe('the sorted bundle docs/cloud-function.md shows how to make', () => {
  test('find | LC_ALL=C sort -z | tar --null --no-recursion -T - gives -f\'s diffID; tar --sort=name does not', async () => {
    const dir = await tree('dist', { 'a/x': 'x', 'a-c': 'c', 'a.b/y': 'y', b: 'b', l: { symlink: 'b' } });
    const full = run('sh', ['-c', `cd '${dir}' && find . -print0 | LC_ALL=C sort -z | tar --null --no-recursion -T - -czf -`]);
    const byName = run('tar', ['--sort=name', '-C', dir, '-cf', '-', '.']);
    const local = await diffIdOfLocal(dir);
    assert.equal(await diffIdOfBundle(full), local);
    assert.notEqual(await diffIdOfBundle(byName), local);
  });
});

test('a PAX size record is followed to the next header: zeros in the data are not the end of the archive', async () => {
  // The ustar size field says 0, a PAX `size` record says 1024 (how writers carry sizes a header
  // cannot hold), and the data is 1024 zero bytes: two zero blocks where a header would be due if
  // the record were missed. tar-stream takes the record's size; so must the end-of-archive search,
  // else it stops inside the data and the later entry is lost.
  const tar = run('python3', ['-c', `
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as t:
    big = tarfile.TarInfo('zeros'); big.size = 1024; big.pax_headers = {'size': '1024', 'comment': 'x' * 100}
    t.addfile(big, io.BytesIO(bytes(1024)))
    last = tarfile.TarInfo('last'); last.size = 2
    t.addfile(last, io.BytesIO(b'ok'))
b = bytearray(buf.getvalue())
# The 'zeros' header is the block after the PAX header and its records: find it by name.
at = next(i for i in range(0, len(b), 512) if b[i:i + 6] == b'zeros\\0' and b[i + 156] == ord('0'))
b[at + 124:at + 136] = b'00000000000\\0'
b[at + 148:at + 156] = b'        '
b[at + 148:at + 156] = ('%06o\\0 ' % sum(b[at:at + 512])).encode()
sys.stdout.buffer.write(bytes(b))
`]);
  const entries = await entriesOf(tar);
  assert.deepEqual(entries.map(([p, , c]) => [p, c.length]), [['app/zeros', 1024], ['app/last', 2]]);
});
