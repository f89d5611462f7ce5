// Resolves and runs the external programs the tests drive (crane, skopeo, umoci, runc,
// fake-gcs-server, docker-registry, …). They are installed by scripts/setup.sh; nothing here
// downloads anything.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import process from 'node:process';

/** Programs the test harness knows about; any other name is looked up the same way. */
export type ToolName =
  | 'crane'
  | 'skopeo'
  | 'umoci'
  | 'runc'
  | 'fake-gcs-server'
  | 'docker-registry'
  | 'busybox'
  | 'tar'
  | 'gzip'
  | 'gcloud'
  | (string & {});

const resolved = new Map<string, string>();

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Directories searched, in order: PATH, $GOBIN, $GOPATH/bin, ~/go/bin, /usr/sbin, /sbin. */
export function toolSearchPath(): string[] {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  if (process.env.GOBIN) dirs.push(process.env.GOBIN);
  if (process.env.GOPATH) dirs.push(...process.env.GOPATH.split(path.delimiter).map((d) => path.join(d, 'bin')));
  dirs.push(path.join(homedir(), 'go', 'bin'), '/usr/sbin', '/sbin', '/usr/local/sbin');
  return [...new Set(dirs)];
}

/**
 * Absolute path of an external program. Throws (naming scripts/setup.sh) when it is missing,
 * so a test fails loudly instead of silently skipping the real part it needs.
 */
export function tool(name: ToolName): string {
  const hit = resolved.get(name);
  if (hit) return hit;
  for (const dir of toolSearchPath()) {
    const file = path.join(dir, name);
    if (isExecutable(file)) {
      resolved.set(name, file);
      return file;
    }
  }
  throw new Error(
    `test tool "${name}" not found on PATH, $GOBIN or ~/go/bin (searched ${toolSearchPath().join(', ')}); run scripts/setup.sh`,
  );
}

/** Like {@link tool} but returns undefined instead of throwing. */
export function hasTool(name: ToolName): boolean {
  try {
    tool(name);
    return true;
  } catch {
    return false;
  }
}

export interface ExecOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is otherwise closed at once. */
  input?: string | Uint8Array;
  /** Kill the child (SIGKILL) after this many ms; default 120 000. */
  timeoutMs?: number;
  /** Resolve (instead of rejecting) when the exit code is non-zero. */
  allowFailure?: boolean;
  signal?: AbortSignal;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Error thrown by {@link exec}: carries the full command line, exit code and output. */
export class ExecError extends Error {
  readonly command: string;
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  constructor(command: string, code: number | null, signal: string | null, stdout: string, stderr: string, cause?: unknown) {
    const how = signal ? `was killed by ${signal}` : code === null ? 'could not be started' : `exited with code ${code}`;
    super(`command ${how}: ${command}\n${stderr.trim() || stdout.trim() || '(no output)'}`, { cause });
    this.name = 'ExecError';
    this.command = command;
    this.code = code;
    this.stdout = stdout;
    this.stderr = stderr;
  }
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** Shell-quoted rendering of a command, for messages only (exec never uses a shell). */
export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(quote).join(' ');
}

/**
 * Runs a program without a shell and collects its output. Rejects with an {@link ExecError}
 * (full command + stderr) when it cannot start, is killed, or exits non-zero — unless
 * `allowFailure` is set, in which case the exit code is returned.
 */
export function exec(cmd: string, args: readonly string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
  const command = formatCommand(cmd, args);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: opts.signal,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {}); // child may exit without reading its input
    child.stdin.end(opts.input ?? undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    let spawnError: unknown;
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (spawnError !== undefined && child.pid === undefined) {
        reject(new ExecError(command, null, null, stdout, `${stderr}${String(spawnError)}`, spawnError));
      } else if (signal !== null) {
        reject(new ExecError(command, code, signal, stdout, stderr, spawnError));
      } else if (code !== 0 && !opts.allowFailure) {
        reject(new ExecError(command, code, null, stdout, stderr));
      } else {
        resolve({ stdout, stderr, code: code ?? 0 });
      }
    });
  });
}
