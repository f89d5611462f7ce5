import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import tarStream from 'tar-stream';
import type { LayerPolicy } from '../../src/build/request.ts';
import { SourceError } from '../../src/errors.ts';
import type { LayerEntry } from '../../src/layer/entry.ts';
import { LAYER_FORMAT } from '../../src/layer/layer.ts';
import { LAYER_LIMITS, MAX_LAYER_PATH_BYTES, MAX_LAYER_PATHS, MAX_MTIME, packEntries, type LayerLimits } from '../../src/layer/tar.ts';

const GOLDEN = path.join(import.meta.dirname, '../fixtures/layer/golden.tar');
const LONG = 'app/' + 'very-long-directory-name/'.repeat(5) + 'file-with-a-name-that-does-not-fit.txt';

async function* list(entries: readonly LayerEntry[]): AsyncIterable<LayerEntry> {
  yield* entries;
}

function file(p: string, content: string | Buffer, mode = 0o644, extra: Partial<LayerEntry> = {}): LayerEntry {
  const bytes = Buffer.from(content);
  return { path: p, type: 'file', mode, size: bytes.length, open: async () => bytes, origin: `mem:${p}`, uid: 1234, gid: 5678, ...extra };
}

/** A fixed set covering every header kind: a directory entry and undescribed parents, setuid, symlink, hardlink, PAX, stream body. */
function goldenEntries(): LayerEntry[] {
  return [
    { path: 'app', type: 'directory', mode: 0o750, size: 0, origin: 'mem:app', uid: 1000, gid: 1000 },
    file('app/bin/server', '#!/bin/sh\necho hi\n', 0o4755),
    file('app/hello.txt', 'hello\n'),
    { path: 'app/link', type: 'symlink', mode: 0o777, size: 0, linkname: '../etc/target', origin: 'mem:link' },
    { path: 'app/same', type: 'hardlink', mode: 0o644, size: 0, linkname: 'app/hello.txt', origin: 'mem:same' },
    file(LONG, 'long\n'),
    file('etc/streamed', 'x'.repeat(3000), 0o600, { open: async () => Readable.from([Buffer.alloc(1000, 'x'), Buffer.alloc(2000, 'x')]) }),
    file('etc/zero-mode', '', 0o000),
  ];
}

const POLICY: LayerPolicy = { mtime: 1_700_000_000 };

async function tarOf(entries: readonly LayerEntry[], policy: LayerPolicy = POLICY): Promise<Buffer> {
  return buffer(packEntries(list(entries), policy));
}

async function headers(tar: Buffer): Promise<tarStream.Header[]> {
  const out: tarStream.Header[] = [];
  for await (const entry of Readable.from(tar).pipe(tarStream.extract())) {
    out.push(entry.header);
    entry.resume();
  }
  return out;
}

describe('packEntries', () => {
  it('produces the golden tar byte for byte', async () => {
    const tar = await tarOf(goldenEntries());
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, tar);
    assert.ok(tar.equals(readFileSync(GOLDEN)), 'tar differs from test/fixtures/layer/golden.tar (UPDATE_GOLDEN=1 to regenerate after review)');
  });

  it('an empty file that has no open() is written (tar-stream waited for a body that never came)', { timeout: 5000 }, async () => {
    const tar = await tarOf([{ path: 'empty', type: 'file', mode: 0o644, size: 0, origin: 'mem:empty' }, file('after', 'x')]);
    assert.deepEqual((await headers(tar)).map((h) => [h.name, h.size]), [['empty', 0], ['after', 1]]);
  });

  it('the golden tar is LAYER_FORMAT 2: a new golden tar needs a new LAYER_FORMAT', () => {
    // The Cloud Function reuses a layer it recorded while its inputs and LAYER_FORMAT match
    // (src/functions/record.ts): without a bump, images would keep a layer made the old way.
    const golden = createHash('sha256').update(readFileSync(GOLDEN)).digest('hex');
    assert.deepEqual({ LAYER_FORMAT, golden }, { LAYER_FORMAT: 2, golden: '4542e6fc972fd2ad266538ef303c41b55b5b6192e7b77d163b7bff25182ddd65' });
  });

  it('is read by GNU tar: no entries for undescribed parents, fixed mtime, 0:0 owner and setuid dropped', async () => {
    const tar = await tarOf(goldenEntries());
    const listing = execFileSync('tar', ['--numeric-owner', '--utc', '-tvf', '-'], { input: tar, env: { ...process.env, TZ: 'UTC' } })
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.replace(/\s+/g, ' '));
    assert.deepEqual(listing, [
      'drwxr-x--- 0/0 0 2023-11-14 22:13 app/',
      '-rwxr-xr-x 0/0 18 2023-11-14 22:13 app/bin/server',
      '-rw-r--r-- 0/0 6 2023-11-14 22:13 app/hello.txt',
      'lrwxrwxrwx 0/0 0 2023-11-14 22:13 app/link -> ../etc/target',
      'hrw-r--r-- 0/0 0 2023-11-14 22:13 app/same link to app/hello.txt',
      `-rw-r--r-- 0/0 5 2023-11-14 22:13 ${LONG}`,
      '-rw------- 0/0 3000 2023-11-14 22:13 etc/streamed',
      '---------- 0/0 0 2023-11-14 22:13 etc/zero-mode',
    ]);
    const contents = execFileSync('tar', ['-xOf', '-', LONG, 'etc/streamed'], { input: tar }).toString();
    assert.equal(contents, 'long\n' + 'x'.repeat(3000));
  });

  it('writes a PAX header for a name longer than ustar holds', async () => {
    const name = 'd/' + 'n'.repeat(180);
    const tar = await tarOf([file(name, 'p')]);
    assert.ok(tar.includes(Buffer.from(` path=${name}\n`)), 'PAX path record present');
    const hs = await headers(tar);
    assert.deepEqual(
      hs.map((h) => h.name),
      [name],
    );
  });

  it('keeps setuid/setgid with keepSpecialBits and applies chown', async () => {
    const hs = await headers(await tarOf([file('s', 'x', 0o6755), file('t', 'y', 0o1777)], { mtime: 0, keepSpecialBits: true, chown: { uid: 1000, gid: 2000 } }));
    assert.deepEqual(
      hs.map((h) => [h.name, h.mode.toString(8), h.uid, h.gid, h.uname, h.gname, h.mtime.getTime()]),
      [
        ['s', '6755', 1000, 2000, '', '', 0],
        ['t', '1777', 1000, 2000, '', '', 0],
      ],
    );
    const dropped = await headers(await tarOf([file('s', 'x', 0o6755), file('t', 'y', 0o1777)]));
    assert.deepEqual(
      dropped.map((h) => h.mode.toString(8)),
      ['755', '1777'],
      'setuid/setgid dropped, sticky kept',
    );
  });

  it('writes owner ids above what ustar holds as PAX records (OpenShift-style uids)', async () => {
    const tar = await tarOf([file('big', 'x'), { path: 'd', type: 'directory', mode: 0o755, size: 0, origin: 'mem:d' }], { mtime: 0, chown: { uid: 1000680000, gid: 5 } });
    const listing = execFileSync('tar', ['--numeric-owner', '-tvf', '-'], { input: tar }).toString();
    assert.match(listing, /^-rw-r--r-- 1000680000\/5 +1 .* big$/m);
    assert.match(listing, /^drwxr-xr-x 1000680000\/5 +0 .* d\/$/m);
    const hs = await headers(tar);
    assert.deepEqual(
      hs.map((h) => [h.name, h.uid, (h.pax as Record<string, string> | undefined)?.uid, h.gid]),
      [['big', 0, '1000680000', 5], ['d/', 0, '1000680000', 5]],
      'the ustar field says 0 (as Go writes it), the PAX record the id',
    );
    await assert.rejects(tarOf([file('x', 'x')], { mtime: 0, chown: { uid: 2 ** 32, gid: 0 } }), /owner id 4294967296 is out of range 0\.\.4294967295/);
  });

  it('an owner id up to 262143 (what tar-stream writes in 6 octal digits) is in the ustar field; above, in PAX records', async () => {
    const [h] = await headers(await tarOf([file('f', 'x')], { mtime: 0, chown: { uid: 262143, gid: 262143 } }));
    assert.deepEqual([h?.uid, h?.gid, h?.pax ?? null], [262143, 262143, null]);
    // tar-stream writes 777777 (262143) for a larger id: --chown 300000:300000 gave files to 262143.
    const tar = await tarOf([file('f', 'x')], { mtime: 0, chown: { uid: 262144, gid: 300000 } });
    const [next] = await headers(tar);
    const pax = next?.pax as Record<string, string> | undefined;
    assert.deepEqual([next?.uid, next?.gid, pax?.uid, pax?.gid], [0, 0, '262144', '300000']);
    assert.match(execFileSync('tar', ['--numeric-owner', '-tvf', '-'], { input: tar }).toString(), /^-rw-r--r-- 262144\/300000 /);
  });

  it('takes an mtime up to 2038-01-19T03:14:07Z (tar-stream writes seconds | 0), and refuses a later one', async () => {
    const [h] = await headers(await tarOf([file('f', 'x')], { mtime: MAX_MTIME }));
    assert.equal(h?.mtime.getTime(), MAX_MTIME * 1000);
    assert.equal(MAX_MTIME, 2147483647);
    await assert.rejects(tarOf([file('f', 'x')], { mtime: MAX_MTIME + 1 }), { code: 'ARTIFICER_USAGE', message: `layer mtime ${MAX_MTIME + 1} is not a valid timestamp in seconds` });
  });

  it('does not mutate or share headers: two passes give identical bytes', async () => {
    const a = await tarOf(goldenEntries());
    await new Promise((r) => setTimeout(r, 1100));
    const b = await tarOf(goldenEntries());
    assert.ok(a.equals(b));
  });

  for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a//b', './a', 'a/', '']) {
    it(`rejects the path ${JSON.stringify(bad)}`, async () => {
      await assert.rejects(tarOf([file(bad, 'x')]), (err: unknown) => {
        assert.ok(err instanceof SourceError);
        assert.equal(err.code, 'ARTIFICER_SOURCE');
        assert.match(err.message, /must be relative, normalised and without "\.\."/);
        return true;
      });
    });
  }

  it('rejects a hardlink to itself, to nothing earlier, or to what a later entry made a symlink', async () => {
    const link = (p: string, to: string): LayerEntry => ({ path: p, type: 'hardlink', mode: 0o644, size: 0, linkname: to, origin: `mem:${p}` });
    const sym = (p: string, to: string): LayerEntry => ({ path: p, type: 'symlink', mode: 0o777, size: 0, linkname: to, origin: `mem:${p}` });
    await assert.rejects(tarOf([file('a', 'x'), link('a', 'a')]), /hardlink \/a points at itself/);
    await assert.rejects(tarOf([link('b', 'a')]), /hardlink \/b points at \/a, which is not a regular file earlier in the layer/);
    await assert.rejects(tarOf([file('a', 'x'), sym('a', '/etc/shadow'), link('b', 'a')]), /not a regular file earlier/);
    const ok = await headers(await tarOf([file('a', 'x'), link('b', 'a'), link('c', 'b')]));
    assert.deepEqual(ok.map((h) => [h.name, h.type]), [['a', 'file'], ['b', 'link'], ['c', 'link']]);
  });

  it('rejects a symlink target with a NUL', async () => {
    await assert.rejects(tarOf([{ path: 's', type: 'symlink', mode: 0o777, size: 0, linkname: 'abc\0def', origin: 'mem:s' }]), SourceError);
  });

  it('rejects a hardlink whose target escapes', async () => {
    await assert.rejects(
      tarOf([{ path: 'a', type: 'hardlink', mode: 0o644, size: 0, linkname: '../etc/shadow', origin: 'mem:a' }]),
      /invalid hardlink target/,
    );
  });

  describe('path limits (PATH_MAX bytes, 256 components)', () => {
    const at = (p: string): LayerEntry => ({ path: p, type: 'directory', mode: 0o755, size: 0, origin: 'mem:deep' });
    it('accepts a path of exactly 4096 bytes and 256 components', async () => {
      const deepest = Array.from({ length: 256 }, () => 'd').join('/');
      const longest = 'x'.repeat(4096);
      const names = (await headers(await tarOf([at(deepest), file(longest, '')]))).map((h) => h.name);
      assert.deepEqual(names, [deepest + '/', longest]);
    });
    it('refuses a path over 4096 bytes (counted in UTF-8), quickly and without echoing it', async () => {
      const huge = 'a/'.repeat(2_000_000) + 'f'; // the 4 MiB PAX name tar-stream accepts
      const started = Date.now();
      await assert.rejects(tarOf([file(huge, 'x', 0o644, { origin: 'mem:huge' })]), (err: unknown) => {
        assert.ok(err instanceof SourceError);
        assert.match(err.message, /^mem:huge: path "(a\/){60}…" in layer is 4000001 bytes long; at most 4096 are allowed$/);
        return true;
      });
      assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
      await assert.rejects(tarOf([file('é'.repeat(2049), 'x')]), /is 4098 bytes long; at most 4096/);
    });
    it('refuses a path with more than 256 components', async () => {
      await assert.rejects(tarOf([at(Array.from({ length: 257 }, () => 'd').join('/'))]), /has 257 components; at most 256 are allowed/);
    });
    it('refuses a hardlink target over 4096 bytes', async () => {
      await assert.rejects(
        tarOf([file('a', 'x'), { path: 'b', type: 'hardlink', mode: 0o644, size: 0, linkname: 'a'.repeat(5000), origin: 'mem:b' }]),
        /mem:b: hardlink target "a{120}…" in layer is 5000 bytes long/,
      );
    });
    it('shows a NUL in a refused path escaped', async () => {
      await assert.rejects(tarOf([file('a\0b', 'x')]), /invalid path "a\\x00b" in layer/);
    });
  });

  it('rejects bytes whose length differs from size', async () => {
    await assert.rejects(tarOf([file('a', 'abc', 0o644, { size: 4 })]), (err: unknown) => {
      assert.ok(err instanceof SourceError);
      assert.equal(err.message, 'mem:a: changed while being read: expected 4 bytes, got 3');
      return true;
    });
  });

  it('rejects a stream that delivers too many or too few bytes', async () => {
    const long = file('a', 'abcd', 0o644, { size: 3, open: async () => Readable.from([Buffer.from('ab'), Buffer.from('cd')]) });
    await assert.rejects(tarOf([long]), /mem:a: changed while being read: expected 3 bytes, got more than 3/);
    const short = file('a', 'ab', 0o644, { size: 3, open: async () => Readable.from([Buffer.from('ab')]) });
    await assert.rejects(tarOf([short]), /mem:a: changed while being read: expected 3 bytes, got 2/);
  });

  it('turns a failing body stream into a SourceError naming the origin', async () => {
    const failing = file('a', 'ab', 0o644, {
      size: 10,
      open: async () =>
        new Readable({
          read() {
            this.destroy(Object.assign(new Error('boom'), { code: 'EACCES' }));
          },
        }),
    });
    await assert.rejects(tarOf([failing]), (err: unknown) => err instanceof SourceError && err.message === 'mem:a: permission denied');
  });

  it('stops when the consumer destroys the stream', async () => {
    let opened = 0;
    async function* many(): AsyncIterable<LayerEntry> {
      for (let i = 0; i < 10_000; i++) {
        yield file(`f${String(i).padStart(5, '0')}`, Buffer.alloc(4096), 0o644, {
          open: async () => {
            opened++;
            return Buffer.alloc(4096);
          },
        });
      }
    }
    const out = packEntries(many(), POLICY);
    for await (const _ of out) break; // destroys the stream
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(opened < 10_000, `stopped early (opened ${opened})`);
  });

  it('aborts through the signal', async () => {
    const ac = new AbortController();
    const out = packEntries(list([file('a', 'x', 0o644, { open: () => new Promise(() => {}) })]), POLICY, ac.signal);
    ac.abort();
    await assert.rejects(buffer(out), { code: 'ARTIFICER_ABORTED' });
  });
});

describe('the paths a layer holds are bounded (the writer remembers each one)', () => {
  /** `count` empty files from `name(i)`, without a list of them in memory. */
  async function* files(count: number, name: (i: number) => string): AsyncIterable<LayerEntry> {
    for (let i = 0; i < count; i++) yield { path: name(i), type: 'file', mode: 0o644, size: 0, origin: `mem:${i}`, open: async () => Buffer.alloc(0) };
  }
  const pack = (count: number, name: (i: number) => string, limits?: LayerLimits): Promise<Buffer> => buffer(packEntries(files(count, name), POLICY, undefined, undefined, limits));

  it(`refuses the entry past ${MAX_LAYER_PATHS} paths (here 1,000), parents no entry names counted`, async () => {
    const limits = { ...LAYER_LIMITS, paths: 1000 };
    // "d" and 999 files below it: exactly the limit. One file more is refused.
    await pack(999, (i) => `d/${i}`, limits);
    await assert.rejects(pack(1000, (i) => `d/${i}`, limits), {
      code: 'ARTIFICER_SOURCE',
      message: 'mem:999: the layer holds more than 1000 files and directories; at most 1000 are allowed',
    });
    // 10 files, each under 99 directories of its own that no entry names.
    await assert.rejects(pack(11, (i) => `${i}/${'d/'.repeat(98)}f`, limits), /^SourceError: mem:10: the layer holds more than 1000 files/);
    assert.equal(LAYER_LIMITS.paths, MAX_LAYER_PATHS);
  });

  it(`refuses the entry whose path takes the paths past ${MAX_LAYER_PATH_BYTES} bytes, a deep tree's parents counted`, { timeout: 60_000 }, async () => {
    // 4,096-byte names: exactly the limit takes 8,192 of them.
    const flat = (i: number): string => `${String(i).padStart(8, '0')}${'x'.repeat(4088)}`;
    await pack(MAX_LAYER_PATH_BYTES / 4096, flat, LAYER_LIMITS);
    await assert.rejects(pack(MAX_LAYER_PATH_BYTES / 4096 + 1, flat, LAYER_LIMITS), /^SourceError: mem:8192: the paths of the layer's files and directories add up to more than 33554432 bytes/);
    // Each file 255 directories deep, under a top directory of its own: ~130 KB of parents per
    // entry that no entry names, remembered all the same.
    const deep = (i: number): string => `${String(i).padStart(8, '0')}/${'d'.repeat(250)}/${'e/'.repeat(253)}f`;
    await assert.rejects(pack(5000, deep, LAYER_LIMITS), /the paths of the layer's files and directories add up to more than 33554432 bytes/);
  });
});

describe('a path is a directory or not, for the whole layer', () => {
  const dir = (p: string): LayerEntry => ({ path: p, type: 'directory', mode: 0o755, size: 0, origin: `mem:${p}/` });
  it('rejects a file under something written as a file', async () => {
    await assert.rejects(tarOf([file('app', 'x'), file('app/server', 'y')]), /mem:app\/server: cannot be added at \/app\/server: \/app is not a directory \(from mem:app\)/);
  });
  it('finds the file however deep below known directories the new path goes', async () => {
    // /srv and /srv/a are known directories; /srv/a/f is a file two levels above the new entry.
    await assert.rejects(
      tarOf([dir('srv'), file('srv/a/b/c', 'x'), file('srv/a/f', 'y'), file('srv/a/f/g/h', 'z')]),
      /cannot be added at \/srv\/a\/f\/g\/h: \/srv\/a\/f is not a directory \(from mem:srv\/a\/f\)/,
    );
    await assert.rejects(tarOf([file('srv/a/b/c', 'x'), file('srv/a/b', 'y')]), /cannot be added at \/srv\/a\/b: a directory is there already/);
  });
  it('rejects a file where a directory was written, explicitly or as a parent', async () => {
    await assert.rejects(tarOf([dir('etc'), file('etc', 'x')]), /cannot be added at \/etc: a directory is there already/);
    await assert.rejects(tarOf([file('etc/a', 'x'), file('etc', 'y')]), /cannot be added at \/etc: a directory is there already/);
  });
  it('rejects a directory where a file was written', async () => {
    await assert.rejects(tarOf([file('bin', 'x'), dir('bin')]), /cannot be a directory at \/bin: it was added as a file/);
  });
  it('allows the same file twice (the later wins on extraction)', async () => {
    const tar = await tarOf([file('a', 'one'), file('a', 'two')]);
    assert.deepEqual((await headers(tar)).map((h) => h.name), ['a', 'a']);
  });
});
