import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SourceError } from '../../src/errors.ts';
import { directoryDestination, fileDestination, imagePath } from '../../src/source/destination.ts';

test('where files and directories land, for every source', () => {
  const rows: Array<[string, string, string]> = [
    ['', 'server', 'server'],
    ['/usr/local/bin/', 'server', 'usr/local/bin/server'],
    ['/usr/local/bin/server', 'app', 'usr/local/bin/server'],
    ['opt//x/./y', 'a', 'opt/x/y'],
  ];
  for (const [to, base, want] of rows) assert.equal(fileDestination(to, base, 'o'), want, `${to} ${base}`);
  assert.equal(directoryDestination('', 'conf', 'o'), 'conf');
  assert.equal(directoryDestination('/app/', 'dist', 'o'), 'app');
  assert.equal(directoryDestination('/', 'dist', 'o'), '');
  assert.equal(imagePath('/a/b/../c', 'o'), 'a/c');
});

test('nothing lands above the root, and a file cannot be the root', () => {
  for (const dest of ['..', '../etc/passwd', 'a/../../etc']) {
    assert.throws(() => imagePath(dest, 'gs://b/app/../../etc'), (e: unknown) => e instanceof SourceError && /leaves the image root/.test(e.message), dest);
  }
  for (const to of ['..', '/..', '../', 'a/../..']) {
    assert.throws(() => fileDestination(to, 'server', 'server'), (e: unknown) => e instanceof SourceError && /leaves the image root/.test(e.message), to);
  }
  // Only a name that is no name at all can make a file the root now; a `to` that names the root means "into it".
  assert.throws(() => fileDestination('/', '.', 'server'), /is the image root, which must be a directory/);
});

test('a destination ending in . or .. is a directory to put the file into, as in Docker COPY', () => {
  const rows: Array<[string, string]> = [
    ['/usr/bin/.', 'usr/bin/server'],
    ['/usr/bin/..', 'usr/server'],
    ['/usr/bin/../', 'usr/server'],
    ['/bin/.', 'bin/server'],
    ['.', 'server'],
    ['./', 'server'],
    ['/.', 'server'],
    ['/', 'server'],
    ['a/b/../..', 'server'],
    // A component that merely starts with a dot is a name: a rename, as before.
    ['/etc/.profile', 'etc/.profile'],
    ['/opt/..x', 'opt/..x'],
    ['/opt/x.', 'opt/x.'],
  ];
  for (const [to, want] of rows) assert.equal(fileDestination(to, 'server', 'server'), want, to);
});
