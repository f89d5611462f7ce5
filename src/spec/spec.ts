/**
 * The build spec: one JSON file that says what to build (`artificer.json`). The CLI reads it with
 * `--spec` (paths relative to the spec file), the Cloud Function reads it from a bucket (paths
 * relative to the spec object's folder), so a cloud build can be reproduced locally.
 *
 * Validation is strict: an unknown field is an error naming its JSON path, because a typo
 * (`"entryponit"`) must not silently build a different image. schema/artificer.schema.json
 * describes the same format for editors; test/unit/spec.test.ts ("schema/artificer.schema.json
 * matches the validator") keeps the two in step.
 */
import { InvalidSpecError } from '../errors.ts';
import type { Platform } from '../oci/types.ts';
import { parsePlatform } from '../build/platform.ts';
import { isTag, parseReference } from '../reference/reference.ts';
import { splitCommand } from './split.ts';
import { checkEnvKey, parseEnvAssignment, parseOwner, parsePort, parseUser, parseWorkdir } from './values.ts';

/**
 * Objects (or local files) to add: a file, or every file under a folder. A `from` ending in `/`
 * must be a folder; one without it is the object (file) of that name if there is one, else the
 * folder.
 */
export interface PathFiles {
  readonly kind: 'path';
  /** Relative to the spec's folder; POSIX separators; never absolute, never with `..`. */
  readonly from: string;
  /**
   * Destination in the image, as in `--files FROM:TO`: empty means "at the root under its
   * basename"; for a folder, `to` receives its contents; for a file, `to` ending in `/` means
   * "into that directory", otherwise it is the new path.
   */
  readonly to: string;
  /** Permission bits for the regular files this item adds (0–0o7777). */
  readonly mode?: number;
}

/**
 * A `.tar` / `.tar.gz` / `.tgz` whose entries are re-packed into the layer under `to`. Whether it
 * is gzip-compressed is read from its first bytes, not its name (src/source/tar-input.ts).
 */
export interface BundleFiles {
  readonly kind: 'bundle';
  readonly bundle: string;
  /** Directory in the image that receives the bundle's entries; default `/`. */
  readonly to: string;
}

export type FileSpec = PathFiles | BundleFiles;

/** A validated spec: every value typed and normalised; references still as text. */
export interface BuildSpec {
  /** An image reference, or `scratch`. */
  readonly base: string;
  readonly target: string;
  /** Extra tags: a bare tag (`"v1"`, same repository as `target`) or a full reference. */
  readonly tags: readonly string[];
  readonly files: readonly FileSpec[];
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
  /** In the order given; `KEY=VALUE` list or object both end up here. */
  readonly env?: ReadonlyArray<readonly [string, string]>;
  readonly workdir?: string;
  readonly user?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  /** Normalised to `PORT/PROTO` ("8080/tcp"). */
  readonly ports?: readonly string[];
  readonly platforms?: 'all' | readonly Platform[];
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/**
 * Top-level fields the validator accepts; the schema's `properties` must list exactly these.
 * `$schema` is allowed so editors can find the JSON Schema.
 */
export const SPEC_FIELDS = [
  '$schema',
  'base',
  'target',
  'tags',
  'files',
  'entrypoint',
  'cmd',
  'env',
  'workdir',
  'user',
  'labels',
  'annotations',
  'ports',
  'platforms',
  'owner',
] as const;
export const PATH_FILE_FIELDS = ['from', 'to', 'mode'] as const;
export const BUNDLE_FILE_FIELDS = ['bundle', 'to'] as const;

/** The biggest spec the function or CLI reads (1 MiB): a spec is a small hand-written file. */
export const MAX_SPEC_BYTES = 1024 * 1024;


type Json = unknown;

class Ctx {
  readonly where: string;
  constructor(where: string) {
    this.where = where;
  }
  fail(path: string, message: string): never {
    throw new InvalidSpecError(this.where ? `${this.where}#${path || '/'}` : path || '/', message);
  }
}

function typeName(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Refuses a key not in `allowed`, suggesting the closest one. `shapes` (for a file item that
 * has neither "from" nor "bundle") widens the suggestions to every shape's fields, so that
 * `{"bundel": …}` is not answered with "allowed: from, to, mode" alone.
 */
function checkFields(ctx: Ctx, path: string, obj: Record<string, Json>, allowed: readonly string[], shapes?: { fields: readonly string[]; text: string }): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      const hint = nearest(key, shapes?.fields ?? allowed);
      const tail = shapes?.text ?? `allowed: ${allowed.join(', ')}`;
      ctx.fail(`${path}/${escapePointer(key)}`, `unknown field "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; ${tail}`);
    }
  }
}

/** Both file item shapes, for an item that names neither "from" nor "bundle". */
const FILE_ITEM_SHAPES = {
  fields: [...new Set([...PATH_FILE_FIELDS, ...BUNDLE_FILE_FIELDS])],
  text: 'a file item is {"from", "to"?, "mode"?} or {"bundle", "to"?}',
};

function escapePointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** The allowed name closest to a typo (edit distance ≤ 2), for "did you mean". */
function nearest(key: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const a of allowed) {
    const d = editDistance(key.toLowerCase(), a.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = a;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function str(ctx: Ctx, path: string, v: Json, opts: { nonEmpty?: boolean } = {}): string {
  if (typeof v !== 'string') ctx.fail(path, `must be a string, not ${typeName(v)}`);
  if (opts.nonEmpty && v.length === 0) ctx.fail(path, 'must not be empty');
  if (v.includes('\0')) ctx.fail(path, 'must not contain a NUL character');
  return v;
}

function stringMap(ctx: Ctx, path: string, v: Json): Record<string, string> {
  if (!isObject(v)) ctx.fail(path, `must be an object of strings, not ${typeName(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (k.length === 0) ctx.fail(path, 'keys must not be empty');
    if (k.includes('\0')) ctx.fail(`${path}/${escapePointer(k)}`, 'key must not contain a NUL character');
    out[k] = str(ctx, `${path}/${escapePointer(k)}`, val);
  }
  return out;
}

function command(ctx: Ctx, path: string, v: Json): string[] {
  if (typeof v === 'string') {
    str(ctx, path, v);
    try {
      const words = splitCommand(v);
      if (words.length === 0) ctx.fail(path, 'must not be empty (use [] to clear it)');
      return words;
    } catch (err) {
      if (err instanceof InvalidSpecError) throw err;
      ctx.fail(path, `cannot split into words: ${(err as Error).message}`);
    }
  }
  if (!Array.isArray(v)) ctx.fail(path, `must be an array of strings or a command line string, not ${typeName(v)}`);
  return v.map((w, i) => str(ctx, `${path}/${i}`, w));
}

/** A relative object/file path: POSIX, no leading `/`, no `.` or `..` segments, no backslashes. */
function relPath(ctx: Ctx, path: string, v: Json): string {
  const s = str(ctx, path, v, { nonEmpty: true });
  if (s.startsWith('/')) ctx.fail(path, `"${s}" must be relative to the spec's folder, not absolute`);
  if (s.includes('\\')) ctx.fail(path, `"${s}" must use "/" as separator`);
  const segs = s.replace(/\/$/, '').split('/');
  if (segs.some((p) => p === '..' || p === '.' || p === '')) {
    ctx.fail(path, `"${s}" must not contain "..", "." or empty segments (paths stay inside the spec's folder)`);
  }
  return s;
}

function destPath(ctx: Ctx, path: string, v: Json | undefined): string {
  if (v === undefined) return '';
  const s = str(ctx, path, v, { nonEmpty: true });
  if (!s.startsWith('/')) ctx.fail(path, `"${s}" must be an absolute path in the image (start with "/")`);
  if (s.split('/').includes('..')) ctx.fail(path, `"${s}" must not contain ".."`);
  return s;
}

function mode(ctx: Ctx, path: string, v: Json): number {
  let n: number;
  if (typeof v === 'string') {
    if (!/^0?[0-7]{1,4}$/.test(v)) ctx.fail(path, `"${v}" is not an octal mode like "0755"`);
    n = parseInt(v, 8);
  } else if (typeof v === 'number' && Number.isInteger(v)) {
    n = v;
  } else {
    ctx.fail(path, `must be an octal string like "0755" or an integer, not ${typeName(v)}`);
  }
  if (n < 0 || n > 0o7777) ctx.fail(path, `${String(v)} is outside 0–07777`);
  return n;
}

function fileItem(ctx: Ctx, path: string, v: Json): FileSpec {
  if (typeof v === 'string') return { kind: 'path', from: relPath(ctx, path, v), to: '' };
  if (!isObject(v)) ctx.fail(path, `must be an object {"from", "to"?, "mode"?} or {"bundle", "to"?}, not ${typeName(v)}`);
  if ('bundle' in v) {
    if ('from' in v) ctx.fail(path, 'has both "from" and "bundle"; use one of them');
    checkFields(ctx, path, v, BUNDLE_FILE_FIELDS);
    const bundle = relPath(ctx, `${path}/bundle`, v.bundle);
    if (!/\.(tar|tar\.gz|tgz)$/.test(bundle)) ctx.fail(`${path}/bundle`, `"${bundle}" must end in .tar, .tar.gz or .tgz`);
    const to = destPath(ctx, `${path}/to`, v.to);
    return { kind: 'bundle', bundle, to: to === '' ? '/' : to };
  }
  checkFields(ctx, path, v, PATH_FILE_FIELDS, 'from' in v ? undefined : FILE_ITEM_SHAPES);
  if (!('from' in v)) ctx.fail(path, 'needs "from" (objects beside the spec) or "bundle" (a .tar/.tar.gz)');
  const from = relPath(ctx, `${path}/from`, v.from);
  const to = destPath(ctx, `${path}/to`, v.to);
  const item: PathFiles = { kind: 'path', from, to };
  return v.mode === undefined ? item : { ...item, mode: mode(ctx, `${path}/mode`, v.mode) };
}

function envList(ctx: Ctx, path: string, v: Json): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      const s = str(ctx, `${path}/${i}`, item);
      out.push(value(ctx, `${path}/${i}`, () => parseEnvAssignment(s)));
    });
  } else if (isObject(v)) {
    for (const [k, val] of Object.entries(v)) {
      value(ctx, `${path}/${escapePointer(k)}`, () => checkEnvKey(k));
      out.push([k, str(ctx, `${path}/${escapePointer(k)}`, val)]);
    }
  } else {
    ctx.fail(path, `must be an object {"KEY": "value"} or a list of "KEY=VALUE", not ${typeName(v)}`);
  }
  return out;
}

/** Runs a shared value parser (./values.ts), turning its reason into an error at `path`. */
function value<T>(ctx: Ctx, path: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    ctx.fail(path, (err as Error).message);
  }
}

function port(ctx: Ctx, path: string, v: Json): string {
  const s = typeof v === 'number' ? String(v) : str(ctx, path, v);
  return value(ctx, path, () => parsePort(s));
}

function reference(ctx: Ctx, path: string, v: Json, opts: { allowDigest: boolean }): string {
  const s = str(ctx, path, v, { nonEmpty: true });
  if (s === 'scratch' && path === '/base') return s;
  try {
    const ref = parseReference(s);
    if (!opts.allowDigest && ref.digest !== undefined) ctx.fail(path, `"${s}" is pinned to a digest; a push target needs a tag`);
  } catch (err) {
    if (err instanceof InvalidSpecError) throw err;
    ctx.fail(path, (err as Error).message);
  }
  return s;
}

/**
 * Validates a parsed JSON value as a build spec. `where` (a file path or `gs://` URL) prefixes
 * every error's location: `spec gs://b/app/artificer.json#/files/0/mode: …`.
 * Throws {@link InvalidSpecError} at the first problem.
 */
export function parseSpec(json: unknown, where = ''): BuildSpec {
  const ctx: Ctx = new Ctx(where);
  if (!isObject(json)) ctx.fail('', `must be a JSON object, not ${typeName(json)}`);
  checkFields(ctx, '', json, SPEC_FIELDS);
  if (json.$schema !== undefined) str(ctx, '/$schema', json.$schema);
  if (json.base === undefined) ctx.fail('/base', 'is required (an image reference, or "scratch")');
  if (json.target === undefined) ctx.fail('/target', 'is required (the image reference to push)');
  const base = reference(ctx, '/base', json.base, { allowDigest: true });
  const target = reference(ctx, '/target', json.target, { allowDigest: false });

  let tags: string[] = [];
  if (json.tags !== undefined) {
    if (!Array.isArray(json.tags)) ctx.fail('/tags', `must be an array of strings, not ${typeName(json.tags)}`);
    tags = json.tags.map((t, i) => {
      const p = `/tags/${i}`;
      const s = str(ctx, p, t, { nonEmpty: true });
      return isTag(s) ? s : reference(ctx, p, s, { allowDigest: false });
    });
  }

  let files: FileSpec[] = [];
  if (json.files !== undefined) {
    if (!Array.isArray(json.files)) ctx.fail('/files', `must be an array, not ${typeName(json.files)}`);
    files = json.files.map((f, i) => fileItem(ctx, `/files/${i}`, f));
  }

  const spec: {
    -readonly [K in keyof BuildSpec]: BuildSpec[K];
  } = { base, target, tags, files };
  if (json.entrypoint !== undefined) spec.entrypoint = command(ctx, '/entrypoint', json.entrypoint);
  if (json.cmd !== undefined) spec.cmd = command(ctx, '/cmd', json.cmd);
  if (json.env !== undefined) spec.env = envList(ctx, '/env', json.env);
  if (json.workdir !== undefined) {
    const w = str(ctx, '/workdir', json.workdir);
    spec.workdir = value(ctx, '/workdir', () => parseWorkdir(w));
  }
  if (json.user !== undefined) {
    const u = str(ctx, '/user', json.user);
    spec.user = value(ctx, '/user', () => parseUser(u));
  }
  if (json.labels !== undefined) spec.labels = stringMap(ctx, '/labels', json.labels);
  if (json.annotations !== undefined) spec.annotations = stringMap(ctx, '/annotations', json.annotations);
  if (json.ports !== undefined) {
    if (!Array.isArray(json.ports)) ctx.fail('/ports', `must be an array, not ${typeName(json.ports)}`);
    spec.ports = json.ports.map((p, i) => port(ctx, `/ports/${i}`, p));
  }
  if (json.platforms !== undefined) {
    const v = json.platforms;
    if (v === 'all') spec.platforms = 'all';
    else if (Array.isArray(v) && v.length > 0) {
      spec.platforms = v.map((p, i) => {
        const s = str(ctx, `/platforms/${i}`, p, { nonEmpty: true });
        try {
          return parsePlatform(s);
        } catch (err) {
          return ctx.fail(`/platforms/${i}`, (err as Error).message);
        }
      });
    } else ctx.fail('/platforms', `must be "all" or a non-empty array like ["linux/amd64", "linux/arm64"]`);
  }
  if (json.owner !== undefined) {
    const s = str(ctx, '/owner', json.owner);
    spec.owner = value(ctx, '/owner', () => parseOwner(s));
  }
  return spec;
}

/**
 * Parses spec text (a file's or an object's bytes). JSON syntax errors become
 * {@link InvalidSpecError}s with the position; a byte-order mark is tolerated.
 */
export function parseSpecText(text: string | Uint8Array, where = ''): BuildSpec {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text;
  if (bytes.length > MAX_SPEC_BYTES) {
    throw new InvalidSpecError(where, `is ${bytes.length} bytes; a spec may be at most ${MAX_SPEC_BYTES} bytes`);
  }
  const s = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8').replace(/^\uFEFF/, '');
  let json: unknown;
  try {
    json = JSON.parse(s);
  } catch (err) {
    throw new InvalidSpecError(where, `is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return parseSpec(json, where);
}
