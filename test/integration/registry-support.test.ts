import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { startRegistry } from '../support/registry.ts';
import { libtrustKeyId, parseScope, startTokenServer } from '../support/token-server.ts';

/** Running, i.e. neither gone nor a zombie waiting for a PID 1 that does not reap (containers). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

test('startRegistry answers on /v2/ and stop() leaves no process and no files', async () => {
  const reg = await startRegistry();
  assert.match(reg.host, /^127\.0\.0\.1:\d+$/);
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200);
  assert.ok(alive(reg.pid));
  await reg.stop();
  assert.equal(alive(reg.pid), false);
  await assert.rejects(fetch(`${reg.url}/v2/`));
  await assert.rejects(readFile(reg.logFile));
  await reg.stop(); // idempotent
});

test('a test process killed by SIGTERM takes its registry with it', async () => {
  const script = `
    import { startRegistry } from ${JSON.stringify(new URL('../support/registry.ts', import.meta.url).href)};
    const reg = await startRegistry();
    console.log(reg.pid);
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise<number>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  assert.ok(alive(pid));
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(alive(pid), false);
});

test('token server: kid is libtrust-formatted, scopes parse, default authorize grants users only', async () => {
  const ts = await startTokenServer({ users: { u: 'p' } });
  try {
    const cert = await readFile(ts.rootCertBundle, 'utf8');
    const kid = libtrustKeyId(createPublicKey(cert));
    assert.match(kid, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    assert.deepEqual(parseScope('repository:a/b:pull,push'), { type: 'repository', name: 'a/b', actions: ['pull', 'push'] });
    const basic = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;
    const ok = await fetch(`${ts.realm}?service=${ts.service}&scope=repository:x:pull`, { headers: { authorization: basic('u', 'p') } });
    const { token } = (await ok.json()) as { token: string };
    const [h, c] = token.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>);
    assert.equal(h!.kid, kid);
    assert.equal(h!.alg, 'RS256');
    assert.equal(c!.aud, ts.service);
    assert.deepEqual(c!.access, [{ type: 'repository', name: 'x', actions: ['pull'] }]);
    assert.equal((await fetch(ts.realm, { headers: { authorization: basic('u', 'wrong') } })).status, 401);
    const anon = (await (await fetch(`${ts.realm}?scope=repository:x:pull`)).json()) as { token: string };
    assert.deepEqual(JSON.parse(Buffer.from(anon.token.split('.')[1]!, 'base64url').toString()).access, []);
    assert.equal(ts.tokensIssued(), 2);
    assert.equal(ts.requests.length, 3);
  } finally {
    await ts.stop();
  }
});
