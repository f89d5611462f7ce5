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
 * into `to` when it ends in `/`, else at `to` itself (a rename).
 */
export function fileDestination(to: string, basename: string, origin: string): string {
  const dest = to === '' ? basename : to.endsWith('/') ? to + basename : to;
  const p = imagePath(dest, origin);
  if (p === '') throw new SourceError(origin, `destination "${to}" is the image root, which must be a directory`);
  return p;
}

/** Where a directory's contents land: in `to`, or under the directory's own name when `to` is empty. */
export function directoryDestination(to: string, basename: string, origin: string): string {
  return imagePath(to === '' ? basename : to, origin);
}
