// What a deploy uploads: `gcloud functions deploy --source=.` (through .gcloudignore) and the
// Terraform source zip (infra/main.tf's archive_file excludes) must both carry exactly what the
// function's build needs (package files, tsconfigs, schema/, src/), and never the local
// scratch a developer's checkout holds (bench data, test output, profiles: hundreds of MiB).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { exec } from '../support/tools.ts';

const root = path.resolve(import.meta.dirname, '../..');
/** Top-level names the function's build needs; everything else stays home. */
const NEEDED = new Set(['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'schema', 'src']);

describe('deploy source', () => {
  const config = mkdtempSync(path.join(tmpdir(), 'artificer-gcloud-'));
  after(() => rmSync(config, { recursive: true, force: true }));

  test('.gcloudignore leaves exactly the build inputs, whatever scratch the checkout holds', async () => {
    const { stdout } = await exec('gcloud', ['meta', 'list-files-for-upload', root], {
      env: { ...process.env, CLOUDSDK_CONFIG: config, CLOUDSDK_CORE_DISABLE_PROMPTS: '1', CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: '1' },
    });
    const files = stdout.split('\n').filter(Boolean);
    const stray = files.filter((f) => !NEEDED.has(f.split('/')[0]!));
    assert.deepEqual(stray, []);
    for (const f of ['package.json', 'package-lock.json', 'tsconfig.build.json', 'src/functions/index.ts', 'schema/artificer.schema.json']) {
      assert.ok(files.includes(f), `${f} is uploaded`);
    }
  });

  test('the Terraform source zip excludes every other top-level name of the checkout', () => {
    const tf = readFileSync(path.join(root, 'infra/main.tf'), 'utf8');
    const block = /data "archive_file" "source" \{[\s\S]*?excludes = \[([\s\S]*?)\]/.exec(tf);
    assert.ok(block, 'infra/main.tf has the archive_file source with excludes');
    const excludes = new Set([...block[1]!.matchAll(/"([^"]+)"/g)].map((m) => m[1]!));
    // The names a checkout has or grows (scratch dirs are created by tests, bench and A/B work).
    const names = new Set([...readdirSync(root), '.tmp', '.ab', '.ci', '.build', 'dist', 'node_modules']);
    const shipped = [...names].filter((n) => !NEEDED.has(n) && !excludes.has(n));
    assert.deepEqual(shipped, []);
    for (const n of NEEDED) assert.ok(!excludes.has(n), `${n} is kept`);
  });
});
