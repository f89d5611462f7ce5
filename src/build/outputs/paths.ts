import { realpathSync } from 'node:fs';
import path from 'node:path';

/**
 * The source, of `sourcesAbs`, that an output at `outputAbs` would be written into (inside it, or
 * it itself), else undefined. Callers that know both, the CLI, refuse such an output up front:
 * the output appears between the layer's passes (an OCI layout's `blobs/` and `oci-layout`, a
 * tarball's `.partial-` file), so the pass that writes the layer sees a tree the first one did not
 * and the build fails on every run, and the next build would pack the previous output into the
 * image. The output writers cannot check this themselves: they never see where the files come from.
 *
 * Symlinks are resolved on both sides, the output's through its deepest existing ancestor since it
 * may not exist yet: a source named through a symlink is walked where it points, and an output
 * under a symlink inside a source lands outside it (the walk keeps symlinks in a tree as links).
 * Sources are returned as given, for the message.
 */
export function outputInside(sourcesAbs: readonly string[], outputAbs: string): string | undefined {
  const out = resolveExisting(outputAbs);
  return sourcesAbs.find((source) => within(resolveExisting(source), out));
}

/**
 * Whether `pAbs` is `dirAbs` or below it, symlinks resolved on both sides as in
 * {@link outputInside} (a path that leads out through a symlink is not inside).
 */
export function isInside(dirAbs: string, pAbs: string): boolean {
  return within(resolveExisting(dirAbs), resolveExisting(pAbs));
}

/** `p` is `dir` or below it; both already resolved. */
function within(dir: string, p: string): boolean {
  return p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}

/** `p` with the symlinks of its longest existing prefix resolved; the rest as written. */
function resolveExisting(p: string): string {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(realpathSync(head), ...tail);
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return path.resolve(p);
      tail.unshift(path.basename(head));
      head = parent;
    }
  }
}
