import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { defaultDispatcher, request } from '../../src/registry/http.ts';

// src/registry/http.ts loads two of undici's own modules instead of its index: this file is what
// fails when an undici upgrade moves or reshapes them.

const root = new URL('../../', import.meta.url);
const readJson = (p: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(p, root), 'utf8')) as Record<string, unknown>;

test('undici is pinned to one exact version, the one installed', () => {
  const wanted = (readJson('package.json').dependencies as Record<string, string>).undici;
  assert.match(wanted ?? '', /^\d+\.\d+\.\d+$/, 'package.json must pin undici exactly: src/registry/http.ts imports its private modules');
  assert.equal(readJson('node_modules/undici/package.json').version, wanted);
});

let server: http.Server;
let base: string;
const seen: Array<{ method: string; url: string; agent: string | undefined; body: string }> = [];

before(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, agent: req.headers['user-agent'], body });
      res.writeHead(req.url === '/missing' ? 404 : 201, { 'content-type': 'text/plain', location: '/next?x=1' });
      res.end(`got ${req.method} ${req.url}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await defaultDispatcher().close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test('request sends method, path with query, headers and body, and returns status, headers and body', async () => {
  seen.length = 0;
  const res = await request(`${base}/v2/repo/blobs/uploads/?digest=sha256%3Aab&n=2`, {
    method: 'PUT',
    headers: { 'user-agent': 'artificer-test' },
    body: 'payload',
  });
  assert.equal(res.statusCode, 201);
  assert.equal(res.headers.location, '/next?x=1');
  assert.equal(await res.body.text(), 'got PUT /v2/repo/blobs/uploads/?digest=sha256%3Aab&n=2');
  assert.deepEqual(seen, [{ method: 'PUT', url: '/v2/repo/blobs/uploads/?digest=sha256%3Aab&n=2', agent: 'artificer-test', body: 'payload' }]);

  const missing = await request(new URL('/missing', base), { method: 'GET' });
  assert.equal(missing.statusCode, 404, 'a status is an answer, not an error');
  await missing.body.dump();
});

test('request honours the abort signal and a dispatcher given to it', async () => {
  const closed = new AbortController();
  closed.abort(new Error('stop'));
  await assert.rejects(request(`${base}/`, { method: 'GET', signal: closed.signal }));

  let dispatched = 0;
  const agent = defaultDispatcher();
  const counting = Object.create(agent, {
    dispatch: { value: (...args: Parameters<typeof agent.dispatch>) => (dispatched++, agent.dispatch(...args)) },
  }) as typeof agent;
  const res = await request(`${base}/via`, { method: 'GET', dispatcher: counting });
  assert.equal(await res.body.text(), 'got GET /via');
  assert.equal(dispatched, 1);
});
