import path from 'node:path';
import { SourceError } from '../errors.ts';

/**
 * Where things land in the image, by the rules of `--files SRC:DEST` (and of a spec's
 * `{from, to}`), for every source alike: local disk, Cloud Storage objects.
 */

/** A destination as a layer path: POSIX, relative to `/`, normalised, never above the root. */
export function imagePath(dest: string, origin: string): string {
  const norm = path.posix.normalize(dest.replace(/^\/+/, '') || '.');
  if (norm === '..' || norm.startsWith('../')) throw new SourceError(origin, `destination "${dest}" leaves the image root`);
  return norm === '.' ? '' : norm.replace(/\/+$/, '');
}

/**
 * Where a single file named `basename` lands: at the root under its name when `to` is empty,
 * into `to` when `to` names a directory, else at `to` itself (a rename).
 *
 * `to` names a directory, as in Docker's `COPY`, when it ends in `/` or its last component is
 * `.` or `..`: `/usr/bin/.` is `/usr/bin/server`, `/usr/bin/..` is `/usr/server`, `.` and `./`
 * are both `/server`. Normalising such a `to` as a file path instead turned the file into the
 * directory itself (a file at `/usr/bin`, or at `/bin` over a base's directory).
 */
export function fileDestination(to: string, basename: string, origin: string): string {
  let dest = to;
  if (namesDirectory(to)) {
    const dir = imagePath(to, origin);
    dest = dir === '' ? basename : `${dir}/${basename}`;
  }
  const p = imagePath(dest, origin);
  if (p === '') throw new SourceError(origin, `destination "${dest}" is the image root, which must be a directory`);
  return p;
}

/** Empty, ending in `/`, or ending in a `.` or `..` component. */
function namesDirectory(to: string): boolean {
  return /(^|\/)\.{0,2}$/.test(to);
}

/**
 * Whether a directory source names its *contents* rather than itself: `.`, or a path whose last
 * component is `.` (`app/.`, `./`), as `cp -r app/. x` and Docker's `COPY . /x` mean. Its contents
 * then land in `to`, the root when `to` is empty. Under the directory's own name, `-f .` put
 * everything under the name of the checkout's directory, so the digest depended on where the
 * repository was cloned. `conf/` still names the directory itself (`/conf/…`).
 */
export function namesContents(from: string): boolean {
  return /(^|\/)\.\/*$/.test(from);
}

/** Where a directory's contents land: in `to`, or under the directory's own name when `to` is empty. */
export function directoryDestination(to: string, basename: string, origin: string): string {
  return imagePath(to === '' ? basename : to, origin);
}
