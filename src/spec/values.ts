/**
 * The small value syntaxes that both the CLI flags and the spec file accept: `KEY=VALUE`, ports,
 * owners. One definition, so `--env` and `"env"` cannot drift apart. Each parser throws a plain
 * `Error` whose message is the reason; the caller wraps it with where the value came from (a
 * flag, or a JSON path in a spec).
 */

/** A variable name as Docker accepts it: anything but empty, `=`, NUL and white space. */
const ENV_KEY_RE = /^[^=\0\s]+$/;
const PORT_RE = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i;
const OWNER_RE = /^(\d{1,10}):(\d{1,10})$/;

/** Checks a variable name (the key of an `env` object, or the left of `KEY=VALUE`). */
export function checkEnvKey(key: string): string {
  if (!ENV_KEY_RE.test(key)) throw new Error(`"${key}" is not a valid variable name (not empty, no "=", no spaces)`);
  return key;
}

/** `KEY=VALUE` → `[KEY, VALUE]` (labels, annotations); the value may be empty and may contain `=`. */
export function parseAssignment(text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`"${text}" must be KEY=VALUE`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

/** An environment assignment: {@link parseAssignment} with a valid variable name. */
export function parseEnvAssignment(text: string): [string, string] {
  const [key, value] = parseAssignment(text);
  return [checkEnvKey(key), value];
}

/** `8080`, `8080/tcp`, `53/UDP` → `PORT/proto`, the form of a config's `ExposedPorts` keys. */
export function parsePort(text: string): string {
  const m = PORT_RE.exec(text);
  const n = m ? Number(m[1]) : NaN;
  if (!m || n < 1 || n > 65535) throw new Error(`"${text}" is not a port: expected PORT or PORT/PROTO with PORT 1-65535 and PROTO tcp, udp or sctp, e.g. 8080 or 53/udp`);
  return `${n}/${(m[2] ?? 'tcp').toLowerCase()}`;
}

/** `uid:gid`, numeric: names would need the image's /etc/passwd, which a build never reads. */
export function parseOwner(text: string): { uid: number; gid: number } {
  const m = OWNER_RE.exec(text);
  const uid = m ? Number(m[1]) : NaN;
  const gid = m ? Number(m[2]) : NaN;
  if (!m || uid > 0xffffffff || gid > 0xffffffff) throw new Error(`"${text}" must be numeric "uid:gid", e.g. "65532:65532"`);
  return { uid, gid };
}

/**
 * A working directory: absolute, as the image spec asks and runtimes insist (runc refuses to
 * start a container whose cwd is relative: "Cwd must be an absolute path").
 */
export function parseWorkdir(text: string): string {
  if (text === '') throw new Error('must not be empty');
  if (!text.startsWith('/')) throw new Error(`"${text}" must be an absolute path (start with "/")`);
  return text;
}

/** A user (`65532`, `65532:65532`, `nobody`): not empty, which would mean the base's user by accident. */
export function parseUser(text: string): string {
  if (text === '') throw new Error('must not be empty (leave it out to keep the base image\'s user)');
  return text;
}
