import { accessSync, constants, realpathSync, statSync, type Stats } from 'node:fs';
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

/**
 * Why an output at `abs` could not be written, or undefined when it can. Outputs are written
 * last, after the tags are live, so a caller that knows them up front (the CLI) checks them
 * before the first request to a registry: a typo in a path must not leave a pushed image and a
 * failed job. `file` (a tarball: a temporary file renamed over it) is made in its directory,
 * which nothing creates: it must exist and be writable, and the file must not be a directory.
 * `written-file` (the digest file) is opened and written in place: an existing one only needs to
 * be writable itself (`/dev/termination-log`, `/dev/stdout` as a non-root user, in a directory
 * they may not write to); a new one needs its directory. `directory` (an
 * OCI layout) is created with its missing parents, so the nearest one that exists must be a
 * writable directory, as must the layout's directory when it exists.
 *
 * Writable means what access(2) says; root passes it everywhere but on a read-only file system.
 */
export function outputProblem(abs: string, kind: 'file' | 'written-file' | 'directory'): string | undefined {
  const st = statIfAny(abs);
  if (kind === 'written-file' && st && !st.isDirectory()) {
    try {
      accessSync(abs, constants.W_OK);
      return undefined;
    } catch {
      return `${abs} is not writable`;
    }
  }
  if (kind !== 'directory') {
    if (st?.isDirectory()) return `${abs} is a directory`;
    const problem = directoryProblem(path.dirname(abs));
    return problem && `its directory ${problem}`;
  }
  if (st) return directoryProblem(abs);
  let dir = path.dirname(abs);
  while (!statIfAny(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  const problem = directoryProblem(dir);
  return problem && `it cannot be created: ${problem}`;
}

function directoryProblem(dir: string): string | undefined {
  const st = statIfAny(dir);
  if (!st) return `${dir} does not exist`;
  if (!st.isDirectory()) return `${dir} is not a directory`;
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    return `${dir} is not writable`;
  }
  return undefined;
}

function statIfAny(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined; // missing, or a component is not a directory: nothing there to use
  }
}
