import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { chmod, chown, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SourceError } from '../../src/errors.ts';
import type { EntrySource, LayerEntry } from '../../src/layer/entry.ts';
import { BufferPool } from '../../src/layer/pool.ts';
import { localSource, parseLocalSpec, SMALL_FILE_BYTES } from '../../src/source/local.ts';
import { tempDir, type TempDir } from '../support/tmp.ts';

async function collect(src: EntrySource): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for await (const e of src()) out.push(e);
  return out;
}

async function paths(specs: ReadonlyArray<{ from: string; to: string }>, cwd: string): Promise<string[]> {
  return (await collect(localSource(specs, { cwd }))).map((e) => (e.type === 'directory' ? e.path + '/' : e.path));
}

function isSourceError(message: RegExp | string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof SourceError, `expected a SourceError, got ${String(err)}`);
    assert.equal(err.code, 'ARTIFICER_SOURCE');
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  };
}

describe('localSource', () => {
  let tmp: TempDir;
  let cwd: string;
  before(async () => {
    tmp = await tempDir('local-source');
    cwd = tmp.path;
    await mkdir(path.join(cwd, 'conf/sub'), { recursive: true });
    await mkdir(path.join(cwd, 'dist'), { recursive: true });
    await writeFile(path.join(cwd, 'server'), 'binary');
    await chmod(path.join(cwd, 'server'), 0o755);
    await writeFile(path.join(cwd, 'conf/app.yaml'), 'a: 1\n');
    await writeFile(path.join(cwd, 'conf/sub/x'), 'x');
    await writeFile(path.join(cwd, 'dist/index.js'), 'js');
    await writeFile(path.join(cwd, 'dist/B'), 'upper');
    await writeFile(path.join(cwd, 'dist/a-b'), 'dash');
    await mkdir(path.join(cwd, 'dist/a'));
    await writeFile(path.join(cwd, 'dist/a/z'), 'z');
  });
  after(() => tmp.remove());

  it('puts a file under its basename at the root', async () => {
    assert.deepEqual(await paths([{ from: 'server', to: '' }], cwd), ['server']);
  });

  it('puts a directory under its basename, with or without a trailing slash', async () => {
    const expected = ['conf/app.yaml', 'conf/sub/', 'conf/sub/x'];
    assert.deepEqual(await paths([{ from: 'conf', to: '' }], cwd), expected);
    assert.deepEqual(await paths([{ from: 'conf/', to: '' }], cwd), expected);
  });

  it("puts a directory's contents under SRC:DEST, sorted in byte order", async () => {
    assert.deepEqual(await paths([{ from: 'dist/', to: '/app/' }], cwd), ['app/B', 'app/a/', 'app/a-b', 'app/a/z', 'app/index.js']);
    assert.deepEqual(await paths([{ from: 'dist', to: '/app' }], cwd), ['app/B', 'app/a/', 'app/a-b', 'app/a/z', 'app/index.js']);
  });

  it('renames a file, or puts it into a directory when DEST ends in /', async () => {
    assert.deepEqual(await paths([{ from: 'server', to: '/usr/local/bin/server2' }], cwd), ['usr/local/bin/server2']);
    assert.deepEqual(await paths([{ from: 'server', to: '/usr/bin/' }], cwd), ['usr/bin/server']);
    assert.deepEqual(await paths([{ from: './server', to: 'opt//x/../y' }], cwd), ['opt/y']);
  });

  it('`.` and `dir/.` name the contents, as cp -r dir/. and COPY . do: at / or under DEST, never under a directory name', async () => {
    const conf = ['app.yaml', 'sub/', 'sub/x'];
    assert.deepEqual(await paths([{ from: '.', to: '' }], path.join(cwd, 'conf')), conf);
    assert.deepEqual(await paths([{ from: './', to: '' }], path.join(cwd, 'conf')), conf);
    assert.deepEqual(await paths([{ from: 'conf/.', to: '' }], cwd), conf);
    assert.deepEqual(await paths([{ from: 'conf/.', to: '/srv/' }], cwd), ['srv/app.yaml', 'srv/sub/', 'srv/sub/x']);
    assert.deepEqual(await paths([{ from: 'conf/', to: '' }], cwd), ['conf/app.yaml', 'conf/sub/', 'conf/sub/x'], 'conf/ keeps its name');
  });

  it('contents of a directory at / have no root entry', async () => {
    assert.deepEqual(await paths([{ from: 'conf', to: '/' }], cwd), ['app.yaml', 'sub/', 'sub/x']);
  });

  it('sorts by UTF-8 bytes, not UTF-16 code units', async () => {
    await using t = await tempDir('local-utf8');
    // UTF-16 puts the emoji (D83D …) before U+FFFD; UTF-8 puts U+FFFD (EF …) before it (F0 …).
    for (const name of ['z', 'Z', 'é', '\u{1F600}', '\uFFFD']) await writeFile(path.join(t.path, name), name);
    const entries = await collect(localSource([{ from: '.', to: '/d' }], { cwd: t.path }));
    assert.deepEqual(entries.map((e) => e.path), ['d/Z', 'd/z', 'd/é', 'd/\uFFFD', 'd/\u{1F600}']);
  });

    it('sorts across specs; a later spec wins a duplicate path', async () => {
    await using t = await tempDir('local-dup');
    await writeFile(path.join(t.path, 'one'), '1');
    await writeFile(path.join(t.path, 'two'), '22');
    const entries = await collect(
      localSource(
        [
          { from: 'two', to: '/z' },
          { from: 'one', to: '/a' },
          { from: 'two', to: '/a' },
        ],
        { cwd: t.path },
      ),
    );
    assert.deepEqual(
      entries.map((e) => [e.path, e.size, e.origin]),
      [
        ['a', 2, 'two'],
        ['z', 2, 'two'],
      ],
    );
  });

  it('rejects a file used as a directory by another spec', async () => {
    await assert.rejects(
      collect(localSource([{ from: 'server', to: '/app' }, { from: 'dist', to: '/app/x' }], { cwd })),
      isSourceError('dist/B: cannot be added at /app/x/B: /app is a file (from server), not a directory'),
    );
  });

  it('rejects a destination outside the root; a file sent to the root goes into it', async () => {
    await assert.rejects(collect(localSource([{ from: 'server', to: '../../etc/x' }], { cwd })), isSourceError(/leaves the image root/));
    await assert.rejects(collect(localSource([{ from: 'server', to: '/..' }], { cwd })), isSourceError(/leaves the image root/));
    for (const to of ['/', '/.', '.', './']) assert.deepEqual(await paths([{ from: 'server', to }], cwd), ['server'], `"${to}" for a file means "into /"`);
  });

  it('puts a file into the directory a DEST ending in . or .. names, never over it', async () => {
    assert.deepEqual(await paths([{ from: 'server', to: '/usr/bin/.' }], cwd), ['usr/bin/server']);
    assert.deepEqual(await paths([{ from: 'server', to: '/usr/bin/..' }], cwd), ['usr/server']);
  });

  it('keeps symlinks verbatim (even dangling ones) and follows a symlink named directly', async () => {
    await using t = await tempDir('local-links');
    await mkdir(path.join(t.path, 'tree'));
    await writeFile(path.join(t.path, 'tree/real'), 'real');
    await symlink('real', path.join(t.path, 'tree/rel'));
    await symlink('/nowhere/at/all', path.join(t.path, 'tree/dangling'));
    await symlink('tree/real', path.join(t.path, 'top'));
    const entries = await collect(localSource([{ from: 'tree', to: '' }, { from: 'top', to: '' }], { cwd: t.path }));
    assert.deepEqual(
      entries.map((e) => [e.path, e.type, e.linkname ?? null, e.size]),
      [
        ['top', 'file', null, 4],
        ['tree/dangling', 'symlink', '/nowhere/at/all', 0],
        ['tree/real', 'file', null, 4],
        ['tree/rel', 'symlink', 'real', 0],
      ],
    );
  });

  it('writes hardlinked files as independent regular files', async () => {
    await using t = await tempDir('local-hard');
    await writeFile(path.join(t.path, 'a'), 'same');
    await link(path.join(t.path, 'a'), path.join(t.path, 'b'));
    const entries = await collect(localSource([{ from: '.', to: '/d' }], { cwd: t.path }));
    assert.deepEqual(
      entries.map((e) => [e.path, e.type, e.size]),
      [
        ['d/a', 'file', 4],
        ['d/b', 'file', 4],
      ],
    );
  });

  it('rejects a FIFO with a message naming it, before yielding anything', async () => {
    await using t = await tempDir('local-fifo');
    await mkdir(path.join(t.path, 'dir'));
    await writeFile(path.join(t.path, 'dir/a-first'), 'a');
    execFileSync('mkfifo', [path.join(t.path, 'dir/pipe')]);
    const it = localSource([{ from: 'dir', to: '' }], { cwd: t.path })()[Symbol.asyncIterator]();
    await assert.rejects(
      it.next(),
      isSourceError('dir/pipe: is a FIFO; image layers may only contain regular files, directories and symlinks'),
    );
  });

  it('adds what is in a directory, not the directory it lands in (the base may have its own); an empty one is added', async () => {
    await using t = await tempDir('local-root');
    await mkdir(path.join(t.path, 'tools/sub'), { recursive: true });
    await writeFile(path.join(t.path, 'tools/sub/x'), 'x');
    await mkdir(path.join(t.path, 'empty'));
    const entries = await collect(localSource([{ from: 'tools/', to: '/bin/' }, { from: 'empty', to: '/data' }], { cwd: t.path }));
    assert.deepEqual(entries.map((e) => [e.path, e.type]), [['bin/sub', 'directory'], ['bin/sub/x', 'file'], ['data', 'directory']]);
  });

  it('names a file below a directory spec the way path.join would', async () => {
    await using t = await tempDir('local-names');
    await mkdir(path.join(t.path, 'dir/sub'), { recursive: true });
    execFileSync('mkfifo', [path.join(t.path, 'dir/sub/pipe')]);
    for (const from of ['dir', 'dir/', './dir', 'dir//', 'dir/sub/..', path.join(t.path, 'dir')]) {
      const shown = from.startsWith('/') ? `${from}/sub/pipe` : 'dir/sub/pipe';
      await assert.rejects(collect(localSource([{ from, to: '' }], { cwd: t.path })), isSourceError(new RegExp(`^${shown}: is a FIFO`)), from);
    }
  });

  it('rejects a socket', async () => {
    await using t = await tempDir('local-sock');
    const server = createServer();
    await new Promise<void>((r) => server.listen(path.join(t.path, 'sock'), r));
    try {
      await assert.rejects(collect(localSource([{ from: '.', to: '/x' }], { cwd: t.path })), isSourceError(/^sock: is a socket; image layers may only/));
    } finally {
      server.close();
    }
  });

  it('names a missing file and says why', async () => {
    await assert.rejects(
      collect(localSource([{ from: 'server', to: '' }, { from: 'nope/missing.txt', to: '' }], { cwd })),
      isSourceError('nope/missing.txt: no such file or directory'),
    );
  });

  it('reports permission denied for an unreadable file (as an unprivileged user)', async (t) => {
    // Root reads everything; run the walk as nobody in a child process to see EACCES.
    if (process.getuid?.() !== 0) return t.skip('needs root to switch to nobody');
    await using d = await tempDir('local-perm');
    await chmod(d.path, 0o755);
    await writeFile(path.join(d.path, 'secret'), 's');
    await chmod(path.join(d.path, 'secret'), 0o600);
    const script = `
      import { localSource } from ${JSON.stringify(path.resolve('src/source/local.ts'))};
      try { for await (const e of localSource([{ from: 'secret', to: '' }], { cwd: ${JSON.stringify(d.path)} })()) {} console.log('no error'); }
      catch (e) { console.log(e.code + ' ' + e.message); }`;
    const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      cwd: process.cwd(),
    }).toString();
    assert.equal(out.trim(), 'ARTIFICER_SOURCE secret: permission denied');
  });

  it('delivers small files as bytes and big ones as chunks, exactly the files\' bytes, with or without a pool', async () => {
    await using t = await tempDir('local-sizes');
    const smallBytes = Buffer.alloc(SMALL_FILE_BYTES, 1);
    const bigBytes = Buffer.concat([Buffer.alloc(SMALL_FILE_BYTES, 2), Buffer.alloc(SMALL_FILE_BYTES + 1, 3)]);
    await writeFile(path.join(t.path, 'small'), smallBytes);
    await writeFile(path.join(t.path, 'big'), bigBytes);
    const entries = await collect(localSource([{ from: '.', to: '/d' }], { cwd: t.path }));
    const big = entries.find((e) => e.path === 'd/big')!;
    const small = entries.find((e) => e.path === 'd/small')!;
    for (const pool of [undefined, new BufferPool()]) {
      const bigBody = await big.open!(pool);
      const smallBody = await small.open!(pool);
      assert.ok(!(bigBody instanceof Uint8Array) && Symbol.asyncIterator in bigBody);
      assert.ok(smallBody instanceof Uint8Array);
      assert.ok(Buffer.from(smallBody).equals(smallBytes));
      const chunks: Buffer[] = [];
      for await (const c of bigBody) chunks.push(Buffer.from(c)); // copied: the pool may reuse c
      assert.ok(Buffer.concat(chunks).equals(bigBytes));
    }
  });

  it('a small file that changed size since the walk is delivered as it is now, so the writer sees the change', async () => {
    await using t = await tempDir('local-resize');
    for (const [name, now] of [['grew', 'abcdef'], ['shrank', 'ab'], ['same', 'xyz']] as const) {
      await writeFile(path.join(t.path, name), 'abc');
      const [entry] = await collect(localSource([{ from: name, to: '' }], { cwd: t.path }));
      await writeFile(path.join(t.path, name), now);
      const body = await entry!.open!(new BufferPool());
      assert.ok(body instanceof Uint8Array);
      assert.equal(entry!.size, 3);
      assert.equal(Buffer.from(body).toString(), now, name);
    }
  });

  it('a file replaced after the walk (by a FIFO, a symlink, another file) is refused, never read or waited on', async () => {
    await using t = await tempDir('local-swap');
    await writeFile(path.join(t.path, 'other'), 'OTHER');
    await mkdir(path.join(t.path, 'd'));
    await writeFile(path.join(t.path, 'd/other'), 'OTHER');
    const swaps: Array<[string, (p: string) => Promise<void> | void]> = [
      ['a FIFO', (p) => void execFileSync('mkfifo', [p])],
      ['a symlink to a file of the same size', (p) => symlink(path.join(t.path, 'other'), p)],
    ];
    // Named on the command line, and found by walking a directory (opened without following).
    const specs = [{ from: 'f', to: '', file: 'f' }, { from: 'd/', to: '', file: 'd/f' }];
    for (const [what, swap] of swaps) {
      for (const size of [5, SMALL_FILE_BYTES + 1]) {
        for (const spec of specs) {
        const file = path.join(t.path, spec.file);
        await writeFile(file, Buffer.alloc(size, 'h'));
        const entry = (await collect(localSource([spec], { cwd: t.path }))).find((e) => e.path.endsWith('f'));
        await rm(file);
        await swap(file);
        const read = async (): Promise<void> => {
          const body = await entry!.open!(new BufferPool());
          if (!(body instanceof Uint8Array)) for await (const _ of body) void _;
        };
        await assert.rejects(read(), (e: unknown) => e instanceof SourceError && /f: was replaced while the image was being built/.test(e.message), `${what}, ${size} bytes, ${spec.from}`);
        await rm(file);
        }
      }
    }
  });

  it('a file name that is not UTF-8 is named as such, not reported missing', async () => {
    await using t = await tempDir('local-latin1');
    await mkdir(path.join(t.path, 'src'));
    writeFileSync(Buffer.concat([Buffer.from(path.join(t.path, 'src/caf')), Buffer.from([0xe9]), Buffer.from('.txt')]), 'x');
    await assert.rejects(collect(localSource([{ from: 'src', to: '' }], { cwd: t.path })), isSourceError(/^src\/caf\uFFFD\.txt: the file name is not valid UTF-8, which image layer paths must be; rename it$/));
  });

  it('reports facts: mode bits including setuid, owner', async () => {
    await using t = await tempDir('local-mode');
    await writeFile(path.join(t.path, 'suid'), 'x');
    await chmod(path.join(t.path, 'suid'), 0o4750);
    const [e] = await collect(localSource([{ from: 'suid', to: '' }], { cwd: t.path }));
    assert.equal(e?.mode, 0o4750);
    assert.equal(e?.uid, process.getuid?.());
  });

  it("a spec's mode is given to its regular files only: directories and symlinks keep theirs", async () => {
    await using t = await tempDir('local-spec-mode');
    await mkdir(path.join(t.path, 'd/sub'), { recursive: true });
    await chmod(path.join(t.path, 'd/sub'), 0o750);
    await writeFile(path.join(t.path, 'd/sub/f'), 'x');
    await chmod(path.join(t.path, 'd/sub/f'), 0o600);
    await symlink('f', path.join(t.path, 'd/sub/l'));
    const entries = await collect(localSource([{ from: 'd', to: '', mode: 0o755 }], { cwd: t.path }));
    assert.deepEqual(entries.map((e) => [e.path, e.type, e.mode.toString(8)]), [['d/sub', 'directory', '750'], ['d/sub/f', 'file', '755'], ['d/sub/l', 'symlink', '777']]);
  });

  it('reads a file through a symlink named on the command line, small or large', async () => {
    await using t = await tempDir('local-follow');
    for (const [name, size] of [['small', 5], ['big', SMALL_FILE_BYTES + 1]] as const) {
      await writeFile(path.join(t.path, name), Buffer.alloc(size, 'q'));
      await symlink(name, path.join(t.path, `to-${name}`));
      const [entry] = await collect(localSource([{ from: `to-${name}`, to: '' }], { cwd: t.path }));
      const body = await entry!.open!(new BufferPool());
      let got = 0;
      if (body instanceof Uint8Array) got = body.byteLength;
      else for await (const c of body) got += c.byteLength;
      assert.deepEqual([entry!.path, entry!.type, got], [`to-${name}`, 'file', size]);
    }
  });

  it('a file of ours without the owner read bit is refused by the walk, before any byte (as an unprivileged user)', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to switch to nobody');
    await using d = await tempDir('local-noread');
    await chmod(d.path, 0o777);
    await writeFile(path.join(d.path, 'w'), 's');
    await chmod(path.join(d.path, 'w'), 0o266); // others (and the group) may read it; its owner may not
    await chown(path.join(d.path, 'w'), 65534, 65534);
    const script = `
      import { localSource } from ${JSON.stringify(path.resolve('src/source/local.ts'))};
      const src = localSource([{ from: 'w', to: '' }], { cwd: ${JSON.stringify(d.path)} });
      try { await src.check(); console.log('no error'); } catch (e) { console.log(e.code + ' ' + e.message); }`;
    const out = execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      cwd: process.cwd(),
    }).toString();
    assert.equal(out.trim(), 'ARTIFICER_SOURCE w: permission denied');
  });

  it('check() validates up front and its walk serves the next pass only', async () => {
    await using t = await tempDir('local-check');
    await writeFile(path.join(t.path, 'a'), 'a');
    const src = localSource([{ from: '.', to: '/d' }], { cwd: t.path });
    await src.check!();
    await writeFile(path.join(t.path, 'b'), 'b');
    assert.deepEqual((await collect(src)).map((e) => e.path), ['d/a'], 'the pass after check() uses its walk');
    assert.deepEqual((await collect(src)).map((e) => e.path), ['d/a', 'd/b'], 'later passes walk again');
    const bad = localSource([{ from: 'missing', to: '' }], { cwd: t.path });
    await assert.rejects(bad.check!(), (e: unknown) => e instanceof SourceError && /missing: no such file or directory/.test(e.message));
  });

    it('walks again on every call (re-openable)', async () => {
    await using t = await tempDir('local-reopen');
    await writeFile(path.join(t.path, 'a'), 'a');
    const src = localSource([{ from: '.', to: '/d' }], { cwd: t.path });
    assert.deepEqual((await collect(src)).map((e) => e.path), ['d/a']);
    await writeFile(path.join(t.path, 'b'), 'b');
    assert.deepEqual((await collect(src)).map((e) => e.path), ['d/a', 'd/b']);
  });
});

describe('parseLocalSpec', () => {
  for (const [arg, from, to] of [
    ['server', 'server', ''],
    ['conf/', 'conf/', ''],
    ['dist/:/app/', 'dist/', '/app/'],
    ['server:/usr/local/bin/server', 'server', '/usr/local/bin/server'],
    ['a:b:c', 'a', 'b:c'],
  ] as const) {
    it(`${arg} → ${from} : ${to || '(default)'}`, () => {
      assert.deepEqual(parseLocalSpec(arg), { from, to });
    });
  }
  it('rejects an empty source', () => {
    assert.throws(() => parseLocalSpec(':/x'), SourceError);
  });
});
