import type { Readable } from 'node:stream';
import type { BufferPool } from './pool.ts';

/**
 * One thing to put into a layer, as a source (local disk, a Cloud Storage object, an entry of an
 * uploaded bundle) describes it. Sources report facts; the layer writer applies policy
 * (fixed mtime, owner, setuid stripping, path and type checks), so every source gets the same
 * normalisation.
 */
export type EntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface LayerEntry {
  /** Path inside the image: POSIX, relative to `/`, normalised, no trailing slash ("app/bin/server"). */
  readonly path: string;
  readonly type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mask 0o7777) as found at the source. */
  readonly mode: number;
  /** Owner at the source. The writer replaces it with 0:0, or with --chown. */
  readonly uid?: number;
  readonly gid?: number;
  /** Byte length of a regular file; 0 for everything else. */
  readonly size: number;
  /** Symlink target (verbatim) or, for a hardlink, the in-image path it links to. */
  readonly linkname?: string;
  /**
   * The file's bytes, for `type: 'file'`. Called at most once per layer pass, when the entry is
   * written. Either a stream (or any async iterable of chunks) or, for small files, the bytes
   * themselves. The source must deliver exactly `size` bytes; the writer rejects anything else.
   * A source that reads into memory it allocates may take it from `pool` (when given): the
   * layer pass recycles it once the bytes are compressed.
   */
  readonly open?: (pool?: BufferPool) => Promise<Readable | Uint8Array | AsyncIterable<Uint8Array>>;
  /** Where the entry came from, for error messages ("conf/app.yaml", "gs://bucket/obj"). */
  readonly origin: string;
}

/**
 * A re-openable list of entries: each call yields the same entries in the same order. That is
 * what makes a layer re-buildable (retry an upload, compute the digest before writing a
 * tarball) without a temp file.
 */
export type EntrySource = (() => AsyncIterable<LayerEntry>) & {
  /**
   * Optional: check everything that can be checked without producing bytes (paths, types,
   * permissions), so a bad input fails before the first request to a registry. A source that
   * has it may reuse what it learned for its next pass instead of doing the work twice.
   */
  readonly check?: () => Promise<void>;
};
