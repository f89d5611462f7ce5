// build() aborted while it writes an output on disk: the caller gets the library's AbortedError
// (the CLI then exits 130 quietly), not Node's stream AbortError (which read as an internal error).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { build } from '../../src/build/build.ts';
import { AbortedError } from '../../src/errors.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { localSource } from '../../src/source/local.ts';
import { tempDir } from '../support/tmp.ts';

describe('build aborted while writing an output', () => {
  for (const kind of ['oci', 'tarball'] as const) {
    test(kind, async () => {
      await using dir = await tempDir(`abort-${kind}`);
      await writeFile(path.join(dir.path, 'blob'), randomBytes(8 * 1024 * 1024));
      const controller = new AbortController();
      // The layer has been built once (measured) when this is logged; the output write comes next.
      const logger = { debug: () => {}, warn: () => {}, info: (msg: string) => void (msg === 'layer built' && controller.abort()) };
      const out = path.join(dir.path, kind === 'oci' ? 'layout' : 'image.tar');
      const request = {
        base: 'scratch' as const,
        platforms: 'default' as const,
        files: localSource([{ from: 'blob', to: '' }], { cwd: dir.path }),
        layer: { mtime: 0 },
        config: {},
        annotations: {},
        outputs: { registry: [], ...(kind === 'oci' ? { ociLayout: out } : { tarball: out }) },
      };
      await assert.rejects(build(request, { registry: new RegistryClient(), logger, signal: controller.signal }), (err: unknown) => {
        assert.ok(err instanceof AbortedError, String(err));
        assert.match(err.message, /aborted while writing/);
        return true;
      });
    });
  }
});
