// Temporary directories for tests: created under the OS temp dir, removed by the caller
// (prefer `await using` or try/finally) and, as a safety net, when the process exits.
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';

const live = new Set<string>();
let hooked = false;

function track(dir: string): void {
  live.add(dir);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const d of live) rmSync(d, { recursive: true, force: true });
    });
  }
}

export interface TempDir extends AsyncDisposable {
  readonly path: string;
  remove(): Promise<void>;
}

/** A fresh directory `<tmp>/artificer-<prefix>-XXXXXX`; `remove()` (or `await using`) deletes it. */
export async function tempDir(prefix = 'test'): Promise<TempDir> {
  const dir = await mkdtemp(path.join(tmpdir(), `artificer-${prefix}-`));
  track(dir);
  const remove = async (): Promise<void> => {
    live.delete(dir);
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };
  return { path: dir, remove, [Symbol.asyncDispose]: remove };
}

/** A directory that lives until the test process exits (for per-process caches). */
export function processTempDir(prefix = 'cache'): string {
  const dir = mkdtempSync(path.join(tmpdir(), `artificer-${prefix}-`));
  track(dir);
  return dir;
}
