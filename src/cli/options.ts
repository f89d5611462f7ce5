import { parseArgs } from 'node:util';
import { ArtificerError, UsageError } from '../errors.ts';
import type { Platform } from '../oci/types.ts';
import { parsePlatform } from '../build/platform.ts';
import { MAX_MTIME } from '../layer/tar.ts';
import { isTag, parseReference, type Reference } from '../reference/reference.ts';
import { endpointFor } from '../registry/endpoint.ts';
import { hasShellExpansion, shellSyntax, splitCommand } from '../spec/split.ts';
import { parseAssignment, parseEnvAssignment, parseOwner, parsePort, parseUser, parseWorkdir } from '../spec/values.ts';

/**
 * What the command line asks for, validated and typed. Produced by {@link parseOptions}, a pure
 * function of `(argv, env)`: nothing here touches the disk or the network.
 */
export interface CliOptions {
  readonly command: 'build' | 'help' | 'version';
  /** `--spec FILE`: the build comes from a spec file; build-defining flags are then refused. */
  readonly spec?: string;
  readonly base?: Reference | 'scratch';
  /** `--files` arguments as given (`SRC` or `SRC:DEST`), in order. */
  readonly files: readonly string[];
  readonly env: ReadonlyArray<readonly [string, string]>;
  readonly cmd?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly workdir?: string;
  readonly user?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  readonly exposedPorts: readonly string[];
  readonly platforms: 'default' | 'all' | readonly Platform[];
  readonly chown?: { readonly uid: number; readonly gid: number };
  readonly keepSpecialBits: boolean;
  readonly target?: Reference;
  /** Extra tags: bare tags resolved against the target's repository, or full references. */
  readonly tags: readonly (string | Reference)[];
  readonly ociLayout?: string;
  readonly tarball?: string;
  readonly digestFile?: string;
  readonly insecureRegistries: readonly string[];
  /** 0 quiet, 1 progress (-v), 2 debug (-vv). */
  readonly verbosity: number;
  readonly concurrency?: number;
  /** SOURCE_DATE_EPOCH, else 0. */
  readonly mtime: number;
  /**
   * What is valid but probably not what was meant, for the CLI to print as warnings: shell
   * syntax in a command or `$VAR` in an env value, which nothing here expands.
   */
  readonly warnings: readonly string[];
}

export const FLAGS = {
  baseimage: { type: 'string', short: 'b' },
  files: { type: 'string', short: 'f', multiple: true },
  cmd: { type: 'string', short: 'c' },
  env: { type: 'string', short: 'e', multiple: true },
  target: { type: 'string', short: 't', multiple: true },
  tag: { type: 'string', multiple: true },
  entrypoint: { type: 'string' },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
  label: { type: 'string', short: 'l', multiple: true },
  annotation: { type: 'string', short: 'a', multiple: true },
  expose: { type: 'string', multiple: true },
  platform: { type: 'string', short: 'p', multiple: true },
  chown: { type: 'string' },
  'keep-setuid': { type: 'boolean' },
  'digest-file': { type: 'string' },
  output: { type: 'string', short: 'o', multiple: true },
  'insecure-registry': { type: 'string', multiple: true },
  spec: { type: 'string', short: 's' },
  concurrency: { type: 'string', short: 'j' },
  verbose: { type: 'boolean', short: 'v', multiple: true },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

/** Flags that define the image; with `--spec` the spec file defines it instead. */
const BUILD_FLAGS = ['baseimage', 'files', 'cmd', 'env', 'entrypoint', 'workdir', 'user', 'label', 'annotation', 'expose', 'chown'] as const;


/**
 * A flag that takes one value, given more than once: refused rather than "the last one wins"
 * (parseArgs' default), which silently dropped `-u 65532 … -u root` or a second `-w`. `-t` is
 * repeatable on purpose (docker build's and kaniko's `--destination` are), like the list flags.
 */
function refuseRepeated(tokens: ReadonlyArray<{ kind: string; name?: string }>): void {
  const seen = new Map<string, number>();
  for (const t of tokens) if (t.kind === 'option' && t.name !== undefined) seen.set(t.name, (seen.get(t.name) ?? 0) + 1);
  for (const [name, count] of seen) {
    const def: { type: string; short?: string; multiple?: boolean } = FLAGS[name as keyof typeof FLAGS];
    if (count > 1 && def.type === 'string' && !def.multiple) {
      throw new UsageError(`--${name}${def.short ? ` (-${def.short})` : ''} is given ${count} times; it takes one value (see artificer --help)`);
    }
  }
}

/** Runs a shared value parser (src/spec/values.ts) for `--flag text`, as a UsageError naming both. */
function value<T>(flag: string, text: string, parse: (text: string) => T): T {
  try {
    return parse(text);
  } catch (err) {
    throw new UsageError(`--${flag} "${text}": ${(err as Error).message}`);
  }
}

/**
 * A command: a JSON array of strings (`'["/server","--port","80"]'`), or a line split into words
 * like a shell would, without running one (`/server --port 80`).
 */
export function parseCommand(flag: string, text: string): string[] {
  // `--entrypoint ''` clears the base's entrypoint, as `docker run --entrypoint ""` does (= '[]').
  if (flag === 'entrypoint' && text.trim() === '') return [];
  if (text.trimStart().startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`--${flag}: starts with "[" but is not a JSON array: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed) || !parsed.every((w) => typeof w === 'string')) {
      throw new UsageError(`--${flag}: a JSON command must be an array of strings, e.g. ["/server","--port","80"]`);
    }
    return parsed as string[];
  }
  try {
    const words = splitCommand(text);
    if (!words.length) throw new Error('empty command');
    return words;
  } catch (err) {
    throw new UsageError(`--${flag} "${text}": ${(err as Error).message}`);
  }
}

/**
 * Warnings for a command given as a line: Dockerfile users expect `CMD echo $HOME && ls` to run in
 * a shell, but the line is split into argv and run without one (the JSON form says what it means).
 */
function commandWarnings(flag: string, text: string | undefined, words: readonly string[] | undefined): string[] {
  if (text === undefined || !words || text.trimStart().startsWith('[')) return [];
  const shellish = shellSyntax(words);
  if (!shellish.length) return [];
  return [
    `--${flag}: ${shellish.map((w) => JSON.stringify(w)).join(', ')} will reach ${JSON.stringify(words[0])} as plain arguments: ` +
      `the command runs without a shell (no operators, no $VAR expansion). For shell syntax, name the shell: ` +
      `--${flag} '${JSON.stringify(['/bin/sh', '-c', text.trim()])}'`,
  ];
}

/** Warnings for `-e K=V` values with a `$VAR` in them: kept literally, unlike a Dockerfile's ENV. */
function envWarnings(env: ReadonlyArray<readonly [string, string]>): string[] {
  return env
    .filter(([, v]) => hasShellExpansion(v))
    .map(([k, v]) => {
      const ref = v.match(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\$\(|`/)?.[0] ?? '$';
      const path = k === 'PATH' ? "; the base's PATH is replaced, not extended: spell the whole value out" : '';
      return `--env ${k}=${v}: kept as written, nothing expands ${ref} here (a Dockerfile's ENV would)${path}`;
    });
}

function parseSourceDateEpoch(env: NodeJS.ProcessEnv): number {
  const raw = env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return 0;
  if (!/^\d{1,12}$/.test(raw) || Number(raw) > MAX_MTIME) {
    throw new UsageError(`SOURCE_DATE_EPOCH="${raw}": expected whole seconds since 1970-01-01 UTC, at most ${MAX_MTIME} (2038-01-19T03:14:07Z, the latest a layer's tar records)`);
  }
  return Number(raw);
}

function reference(flag: string, text: string): Reference {
  try {
    return parseReference(text);
  } catch (err) {
    if (err instanceof ArtificerError) throw new UsageError(`--${flag}: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * `--insecure-registry HOST[:PORT]`, as it is matched against the registries of references. An
 * `http://` in front (a URL pasted from a browser) is dropped; it was kept and then never
 * matched, so HTTPS was tried anyway. Any other scheme, a path or credentials is refused.
 */
function insecureRegistry(text: string): string {
  const host = text.replace(/^http:\/\//i, '').replace(/\/$/, '');
  const refuse = (why: string) => new UsageError(`--insecure-registry "${text}": ${why}; expected HOST or HOST:PORT, e.g. --insecure-registry reg.lan:5000`);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(host)) throw refuse('only plain http:// can be named (the flag means plain HTTP)');
  try {
    endpointFor(host, [host]);
  } catch {
    throw refuse('not a registry host');
  }
  return host;
}

/** Parses argv (without `node` and the script) and the environment into {@link CliOptions}. */
export function parseOptions(argv: readonly string[], env: NodeJS.ProcessEnv = {}): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false, allowNegative: false, tokens: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message.replace(/\. To specify a positional argument.*$/s, '')} (see artificer --help)`);
  }
  refuseRepeated(parsed.tokens);
  const v = parsed.values;
  const verbosity = v.verbose?.length ?? 0;
  const base = { files: [], env: [], labels: {}, annotations: {}, exposedPorts: [], platforms: 'default' as const, keepSpecialBits: false, tags: [], insecureRegistries: [], verbosity, mtime: 0, warnings: [] };
  if (v.help) return { ...base, command: 'help' };
  if (v.version) return { ...base, command: 'version' };

  if (v.spec !== undefined) {
    const conflicting = BUILD_FLAGS.filter((f) => v[f] !== undefined);
    if (conflicting.length) throw new UsageError(`--spec defines the image; remove ${conflicting.map((f) => `--${f}`).join(', ')} (or edit the spec)`);
  } else if (v.baseimage === undefined) {
    throw new UsageError('missing --baseimage (-b): the image to start FROM, e.g. -b alpine:3.20, or -b scratch for none');
  }

  const outputs: { ociLayout?: string; tarball?: string } = {};
  for (const o of v.output ?? []) {
    const m = /^(oci|tarball):(.+)$/.exec(o);
    if (!m) throw new UsageError(`--output "${o}": expected oci:DIR or tarball:FILE`);
    const key = m[1] === 'oci' ? 'ociLayout' : 'tarball';
    if (outputs[key]) throw new UsageError(`--output ${m[1]}: given twice`);
    if (o === 'tarball:-') throw new UsageError('--output tarball:-: stdout carries the pushed digests, not a tarball; name a file, e.g. -o tarball:image.tar');
    outputs[key] = m[2]!;
  }
  const fullRefTags = (v.tag ?? []).some((t) => !isTag(t));
  if (v.spec === undefined && v.target === undefined && !outputs.ociLayout && !outputs.tarball && !fullRefTags) {
    throw new UsageError('missing --target (-t): where to push, e.g. -t registry.example.com/team/app:1.0 (or --output oci:DIR / tarball:FILE)');
  }
  // `-t app:$SHA -t app:latest`, as docker build takes it: the first is the target, the others
  // are pushed like `--tag REF`s (full references, in any repository).
  const [target, ...moreTargets] = (v.target ?? []).map((t) => {
    const ref = reference('target', t);
    if (ref.digest) throw new UsageError(`--target ${t}: name a tag, not a digest; the digest is what the push produces`);
    return ref;
  });

  const tags = (v.tag ?? []).map((t) => {
    if (isTag(t)) return t;
    if (t.includes('/') || t.includes('@')) {
      const ref = reference('tag', t);
      if (ref.digest) throw new UsageError(`--tag ${t}: name a tag, not a digest; the digest is what the push produces`);
      return ref;
    }
    throw new UsageError(`--tag "${t}": expected a tag (letters, digits, _ . -, up to 128) or a full image reference`);
  });
  if (!target && v.spec === undefined && tags.some((t) => typeof t === 'string')) {
    throw new UsageError('--tag with a bare tag needs --target to say which repository it belongs to');
  }

  let platforms: CliOptions['platforms'] = 'default';
  // Comma-separated or repeated, the same list: `-p linux/amd64,all` is refused as `-p all -p …` is.
  const plats = (v.platform ?? []).flatMap((p) => p.split(','));
  if (plats.includes('all')) {
    if (plats.length > 1) throw new UsageError('--platform all cannot be combined with named platforms');
    platforms = 'all';
  } else if (plats.length) {
    try {
      const seen = new Set<string>();
      // Each platform once: a repeated one would put two identical entries in the index.
      platforms = plats
        .map(parsePlatform)
        .filter((p) => {
          const key = [p.os, p.architecture, p.variant ?? ''].join('/');
          return !seen.has(key) && !!seen.add(key);
        });
    } catch (err) {
      throw new UsageError(`--platform: ${(err as Error).message}`);
    }
  }

  let concurrency: number | undefined;
  if (v.concurrency !== undefined) {
    concurrency = Number(v.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new UsageError(`--concurrency "${v.concurrency}": expected a whole number from 1 to 64`);
  }

  const labels: Record<string, string> = {};
  for (const l of v.label ?? []) {
    const [k, val] = value('label', l, parseAssignment);
    labels[k] = val;
  }
  const annotations: Record<string, string> = {};
  for (const a of v.annotation ?? []) {
    const [k, val] = value('annotation', a, parseAssignment);
    annotations[k] = val;
  }
  for (const f of v.files ?? []) if (f === '' || f.startsWith(':')) throw new UsageError(`--files "${f}": expected SRC or SRC:DEST`);
  const envVars = (v.env ?? []).map((e) => value('env', e, parseEnvAssignment));
  const cmd = v.cmd !== undefined ? parseCommand('cmd', v.cmd) : undefined;
  const entrypoint = v.entrypoint !== undefined ? parseCommand('entrypoint', v.entrypoint) : undefined;

  return {
    ...base,
    command: 'build',
    ...(v.spec !== undefined ? { spec: v.spec } : {}),
    ...(v.baseimage !== undefined ? { base: v.baseimage === 'scratch' ? ('scratch' as const) : reference('baseimage', v.baseimage) } : {}),
    files: v.files ?? [],
    env: envVars,
    ...(cmd ? { cmd } : {}),
    ...(entrypoint ? { entrypoint } : {}),
    ...(v.workdir !== undefined ? { workdir: value('workdir', v.workdir, parseWorkdir) } : {}),
    ...(v.user !== undefined ? { user: value('user', v.user, parseUser) } : {}),
    labels,
    annotations,
    exposedPorts: (v.expose ?? []).map((p) => value('expose', p, parsePort)),
    platforms,
    ...(v.chown !== undefined ? { chown: value('chown', v.chown, parseOwner) } : {}),
    keepSpecialBits: v['keep-setuid'] ?? false,
    ...(target ? { target } : {}),
    tags: [...moreTargets, ...tags],
    ...outputs,
    ...(v['digest-file'] !== undefined ? { digestFile: v['digest-file'] } : {}),
    insecureRegistries: (v['insecure-registry'] ?? []).map(insecureRegistry),
    ...(concurrency !== undefined ? { concurrency } : {}),
    mtime: parseSourceDateEpoch(env),
    warnings: [...commandWarnings('entrypoint', v.entrypoint, entrypoint), ...commandWarnings('cmd', v.cmd, cmd), ...envWarnings(envVars)],
  };
}
