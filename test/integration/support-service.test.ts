// The one way the test helpers run a service (test/support/service.ts): readiness errors carry the
// log and the exit code, stop() is idempotent and escalates to SIGKILL, nothing is left behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { isRunning, startService } from '../support/service.ts';
import { tempDir } from '../support/tmp.ts';

const NODE = process.execPath;
const never = async (): Promise<boolean> => false;

/** The number after `key=` in `text` (the scripts below print their pids that way). */
function pidIn(text: string, key: string): number {
  const m = new RegExp(`${key}=(\\d+)`).exec(text);
  assert.ok(m, `no ${key}= in:\n${text}`);
  return Number(m[1]);
}

async function until(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 250 && !pred(); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(pred(), 'condition not met within 5 s');
}

async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100 && isRunning(pid); i++) await new Promise((r) => setTimeout(r, 20));
  return !isRunning(pid);
}

test('a service that never becomes ready: the error has the log tail, the process is killed', async () => {
  let cleanedUp = false;
  const err = await startService({
    name: 'sleepy',
    command: 'sh',
    args: ['-c', 'echo pid=$$; echo still booting >&2; exec sleep 60'],
    ready: never,
    readyTimeoutMs: 400,
    afterStop: async () => void (cleanedUp = true),
  }).then(
    () => assert.fail('should not be ready'),
    (e: unknown) => e as Error,
  );
  assert.match(err.message, /^sleepy was not ready within 400 ms: sh -c /);
  assert.match(err.message, /end of its output ---\npid=\d+\nstill booting$/);
  assert.equal(isRunning(pidIn(err.message, 'pid')), false);
  assert.ok(cleanedUp, 'afterStop ran');
});

test('a probe that throws counts as not ready, and its last error is in the message', async () => {
  await assert.rejects(
    startService({ name: 'probe', command: 'sleep', args: ['60'], ready: () => Promise.reject(new Error('ECONNREFUSED here')), readyTimeoutMs: 200 }),
    /probe was not ready within 200 ms \(last probe: ECONNREFUSED here\)/,
  );
});

test('a service that dies before it is ready: the error has its exit code or signal and its log', async () => {
  const t0 = Date.now();
  await assert.rejects(
    startService({ name: 'broken', command: 'sh', args: ['-c', 'echo bad config >&2; exit 3'], ready: never, readyTimeoutMs: 10_000 }),
    /^Error: broken exited with code 3 before it was ready: sh -c .*\n--- the end of its output ---\nbad config$/s,
  );
  assert.ok(Date.now() - t0 < 5000, 'noticed the exit without waiting for the timeout');
  await assert.rejects(
    startService({ name: 'killed', command: 'sh', args: ['-c', 'kill -9 $$'], ready: never }),
    /killed was killed by SIGKILL before it was ready/,
  );
  await assert.rejects(
    startService({ name: 'missing', command: '/nonexistent/artificer-bin', args: [], ready: never }),
    /missing could not be started \(.*ENOENT.*\): \/nonexistent\/artificer-bin/,
  );
});

test('stop() ends the process, removes its own log dir, keeps output(), and is idempotent', async () => {
  let cleanedUp = 0;
  const svc = await startService({
    name: 'echo',
    command: 'sh',
    args: ['-c', 'echo hello; exec sleep 60'],
    ready: async () => true,
    afterStop: async () => {
      assert.equal(isRunning(svc.pid), false, 'afterStop runs once the process is gone');
      cleanedUp++;
    },
  });
  await until(() => svc.output() === 'hello\n');
  assert.ok(isRunning(svc.pid));
  await Promise.all([svc.stop(), svc.stop()]);
  await svc.stop();
  assert.equal(cleanedUp, 1);
  assert.equal(isRunning(svc.pid), false);
  assert.equal(existsSync(path.dirname(svc.logFile)), false, 'temp dir removed');
  assert.equal(svc.output(), 'hello\n');
});

test('a process that ignores SIGTERM is SIGKILLed after the grace period; a caller-owned log stays', async () => {
  await using dir = await tempDir('service-test');
  const logFile = path.join(dir.path, 'stubborn.log');
  const svc = await startService({
    name: 'stubborn',
    command: NODE,
    args: ['-e', `process.on('SIGTERM', () => console.log('ignoring TERM')); console.log('ready'); setInterval(() => {}, 1000);`],
    logFile,
    ready: async () => readFileSync(logFile, 'utf8').includes('ready'),
    stopGraceMs: 300,
  });
  const t0 = Date.now();
  await svc.stop();
  assert.ok(Date.now() - t0 >= 300, 'waited for the grace period');
  assert.equal(svc.child.signalCode, 'SIGKILL');
  assert.equal(isRunning(svc.pid), false);
  assert.match(readFileSync(logFile, 'utf8'), /ignoring TERM/);
});

// A leader that dies on SIGTERM and a child of it that ignores SIGTERM, like gcloud and the
// emulator's java.
const FAMILY = `(trap '' TERM; exec sleep 60) & echo child=$!; wait`;

test('processGroup: stop() also ends what the service started', async () => {
  const svc = await startService({ name: 'family', command: 'sh', args: ['-c', FAMILY], processGroup: true, ready: async () => true, stopGraceMs: 300 });
  await until(() => svc.output().includes('child='));
  const child = pidIn(svc.output(), 'child');
  assert.ok(isRunning(child));
  await svc.stop();
  assert.equal(isRunning(svc.pid), false);
  assert.equal(isRunning(child), false);
});

test('a test process ended by SIGTERM takes its services with it, process groups included', async () => {
  const script = `
    import { startService } from ${JSON.stringify(new URL('../support/service.ts', import.meta.url).href)};
    const plain = await startService({ name: 'plain', command: 'sleep', args: ['60'], ready: async () => true });
    const group = await startService({ name: 'family', command: 'sh', args: ['-c', ${JSON.stringify(FAMILY)}], processGroup: true, ready: async () => true });
    while (!group.output().includes('child=')) await new Promise((r) => setTimeout(r, 20));
    console.log(JSON.stringify({ plain: plain.pid, child: Number(/child=(\\d+)/.exec(group.output())[1]), dir: group.logFile }));
    setInterval(() => {}, 1000);
  `;
  const proc = spawn(NODE, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const started = await new Promise<{ plain: number; child: number; dir: string }>((resolve) => proc.stdout.once('data', (d: Buffer) => resolve(JSON.parse(d.toString()))));
  assert.ok(isRunning(started.plain) && isRunning(started.child));
  proc.kill('SIGTERM');
  const [, sig] = await new Promise<[number | null, string | null]>((r) => proc.once('exit', (c, s) => r([c, s])));
  assert.equal(sig, 'SIGTERM', 'the signal still ends the process');
  assert.equal(await waitGone(started.plain), true);
  assert.equal(await waitGone(started.child), true);
  assert.equal(existsSync(path.dirname(started.dir)), false, 'its own log dir removed');
});
