/**
 * One way to run a test service (docker-registry, fake-gcs-server, the functions-framework
 * server, the Pub/Sub emulator) as a real child process on loopback: spawn it with its output in
 * a log file, wait until it is ready, and stop it (SIGTERM, then SIGKILL after a grace period).
 *
 * Every service still alive when the test process exits, or is ended by SIGINT/SIGTERM/SIGHUP
 * (Ctrl-C, the test runner's timeout), is SIGKILLed by one shared hook, so an interrupted run
 * leaves no servers behind. Caveat: a SIGKILL of the test process itself cannot be caught.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface StartServiceOptions {
  /** For messages and the default log file name ("docker-registry", "pubsub emulator"). */
  name: string;
  command: string;
  args: readonly string[];
  /** The child's whole environment; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Where stdout and stderr go (appended). The caller owns it. Default: a file in a fresh temp
   * directory that `stop()` removes (after reading it, so {@link RunningService.output} still works).
   */
  logFile?: string;
  /**
   * Start the child as the leader of a new process group and signal the whole group, for
   * programs that leave children behind (gcloud starts the emulator's java and does not pass
   * SIGTERM on). `stop()` then waits until no member of the group is running.
   */
  processGroup?: boolean;
  /** One readiness probe; true when the service can be used. A throw counts as "not yet". See {@link httpAnswers}. */
  ready: () => Promise<boolean>;
  /** Default 15 000. */
  readyTimeoutMs?: number;
  /** Pause between probes; default 50. */
  pollMs?: number;
  /** How long `stop()` waits after SIGTERM before SIGKILL; default 3 000. */
  stopGraceMs?: number;
  /**
   * Runs once the process is gone, in `stop()` and when the start fails: removes what the caller
   * made for the service (its config dir, a token server).
   */
  afterStop?: () => Promise<void>;
}

export interface RunningService {
  child: ChildProcess;
  pid: number;
  logFile: string;
  /** Everything the service has written so far (stdout and stderr, interleaved as written). */
  output(): string;
  /** SIGTERM, SIGKILL after the grace period, wait until gone, remove what was created. Idempotent. */
  stop(): Promise<void>;
}

interface Live {
  child: ChildProcess;
  processGroup: boolean;
  ownedDir: string | undefined;
}

const live = new Set<Live>();
let hooked = false;

function signal(s: Live, sig: NodeJS.Signals): void {
  if (!s.processGroup) {
    s.child.kill(sig);
    return;
  }
  try {
    process.kill(-s.child.pid!, sig);
  } catch {
    // the whole group is gone already
  }
}

function installExitHook(): void {
  if (hooked) return;
  hooked = true;
  const killAll = (): void => {
    for (const s of live) {
      signal(s, 'SIGKILL');
      if (s.ownedDir) rmSync(s.ownedDir, { recursive: true, force: true });
    }
  };
  process.on('exit', killAll);
  // Kill them, then let the signal do what it would have done.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

/** State letter and process group of `pid` from /proc (Linux), or undefined when there is no such process. */
function procStat(pid: string | number): { state: string; pgrp: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp …"; comm may contain spaces and parentheses.
  const [state = '', , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state, pgrp: Number(pgrp) };
}

/**
 * Whether `pid` is running: neither gone nor a zombie. A process that has exited but was not
 * reaped (its parent gone, and a container's PID 1 that does not reap) stays a zombie, for which
 * `kill(pid, 0)` still succeeds.
 */
export function isRunning(pid: number): boolean {
  const st = procStat(pid);
  return st !== undefined && st.state !== 'Z';
}

/** Whether any process of group `pgid` is running (zombies aside, as in {@link isRunning}). */
function groupRunning(pgid: number): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = procStat(entry);
    if (st && st.pgrp === pgid && st.state !== 'Z') return true;
  }
  return false;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`'s value, or with `fallback` after `ms` (the timer does not outlive it). */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((r) => (timer = setTimeout(() => r(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function tail(text: string, maxChars = 4000): string {
  if (text.length <= maxChars) return text.trimEnd() || '(empty)';
  const cut = text.slice(-maxChars);
  return `…${cut.slice(cut.indexOf('\n') + 1).trimEnd()}`;
}

/**
 * A readiness probe: true when `url` answers with a status `accept` takes (default: any answer).
 * Each request gives up after a second, so a server that accepts but never answers is retried.
 */
export async function httpAnswers(url: string, accept: (status: number) => boolean = () => true): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return accept(res.status);
  } catch {
    return false;
  }
}

/**
 * Spawns `command`, waits until `ready()` says yes, and returns a handle whose `stop()` ends it.
 * Rejects (after stopping it as `stop()` does) when the program cannot be
 * started, exits before it is ready (with its exit code or signal), or is not ready within
 * `readyTimeoutMs`; each message carries the tail of the service's log.
 */
export async function startService(opts: StartServiceOptions): Promise<RunningService> {
  const { name } = opts;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  const pollMs = opts.pollMs ?? 50;
  const stopGraceMs = opts.stopGraceMs ?? 3000;
  const processGroup = opts.processGroup ?? false;
  const ownedDir = opts.logFile ? undefined : await mkdtemp(path.join(tmpdir(), `artificer-${name.replace(/[^\w.-]+/g, '-')}-`));
  const logFile = opts.logFile ?? path.join(ownedDir!, 'output.log');

  installExitHook();
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(opts.command, opts.args, {
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      env: opts.env ?? process.env,
      stdio: ['ignore', fd, fd],
      detached: processGroup,
    });
  } finally {
    closeSync(fd);
  }
  const entry: Live = { child, processGroup, ownedDir };
  let spawnError: Error | undefined;
  // Settles once the child has exited, or could not be started at all (then no 'exit' comes).
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      spawnError ??= err;
      if (child.pid === undefined) resolve();
    });
  });
  if (child.pid !== undefined) live.add(entry);

  let finalOutput: string | undefined;
  const output = (): string => {
    if (finalOutput !== undefined) return finalOutput;
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null || child.pid === undefined;

  async function terminate(): Promise<void> {
    if (child.pid === undefined) return;
    const deadline = Date.now() + stopGraceMs;
    if (!gone()) {
      signal(entry, 'SIGTERM');
      if (!(await within(exited.then(() => true), stopGraceMs, false))) {
        signal(entry, 'SIGKILL');
        await exited;
      }
    }
    if (processGroup) {
      // The leader is gone; what it started may still be shutting down.
      while (groupRunning(child.pid) && Date.now() < deadline) await sleep(50);
      signal(entry, 'SIGKILL');
      for (let i = 0; i < 40 && groupRunning(child.pid); i++) await sleep(50);
    }
  }

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await terminate();
      live.delete(entry);
      if (ownedDir) {
        finalOutput = output();
        await rm(ownedDir, { recursive: true, force: true, maxRetries: 3 });
      }
      await opts.afterStop?.();
    })());

  const deadline = Date.now() + readyTimeoutMs;
  let lastProbeError: unknown;
  for (;;) {
    const remaining = deadline - Date.now();
    const ok = await within(
      Promise.race([
        opts.ready().catch((err: unknown) => {
          lastProbeError = err;
          return false;
        }),
        exited.then(() => false),
      ]),
      Math.max(remaining, 0),
      false,
    );
    if (ok && !gone()) break;
    let problem: string | undefined;
    if (child.pid === undefined) {
      await exited; // the 'error' saying why comes on a later tick
      problem = `could not be started (${spawnError?.message ?? 'no pid'})`;
    } else if (gone()) problem = child.signalCode !== null ? `was killed by ${child.signalCode} before it was ready` : `exited with code ${child.exitCode} before it was ready`;
    else if (Date.now() >= deadline) {
      const why = lastProbeError instanceof Error ? ` (last probe: ${lastProbeError.message})` : '';
      problem = `was not ready within ${readyTimeoutMs} ms${why}`;
    }
    if (problem) {
      const log = tail(output());
      await stop();
      throw new Error(`${name} ${problem}: ${opts.command} ${opts.args.join(' ')}\n--- the end of its output ---\n${log}`);
    }
    await within(exited, pollMs, undefined);
  }
  return { child, pid: child.pid!, logFile, output, stop };
}
