// A small reverse proxy in front of a real registry that injects faults on request, the way
// nodejs-storage's conformance tests drive a testbench with failure instructions: the test says
// "fail the next n requests that look like X with Y", then checks that artificer recovers.
// Bodies stream both ways (no buffering), so multi-megabyte uploads pass through unchanged.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FaultOptions {
  /** Answer with this status and a registry-style JSON error body instead of forwarding. */
  status?: number;
  /** Extra response headers for a `status` fault (e.g. `{ 'retry-after': '0' }`). */
  headers?: Record<string, string>;
  /** Destroy the client's socket (ECONNRESET / "other side closed") instead of answering. */
  reset?: boolean;
  /** With `reset`: first read this many request-body bytes, then reset (a broken upload). */
  afterBytes?: number;
  /** Wait this long before acting (forwarding, answering or resetting). */
  delayMs?: number;
  /** Forward, send the upstream's status and headers, then stall this long before the body. */
  bodyDelayMs?: number;
  /** Forward, let the upstream answer, then reset the client's socket: a request applied whose answer was lost. */
  loseAnswer?: boolean;
  /** Forward, send the upstream's status, headers and this many body bytes, then reset: a connection lost mid-answer. */
  cutAnswerAfterBytes?: number;
  /** Forward, but send these response headers instead of the upstream's (e.g. a lying `docker-content-digest`). */
  responseHeaders?: Record<string, string>;
  /** Forward, but send this status instead of the upstream's (a registry that answers another 2xx, as ECR does). */
  responseStatus?: number;
  /**
   * Forward with the path (and query) rewritten as `path.replace(pattern, replacement)`: the
   * registry answers another request than the one sent (a mount POST stripped of its query gets
   * the ordinary upload session a registry declining the mount opens).
   */
  rewritePath?: readonly [pattern: RegExp, replacement: string];
  /** Forward unchanged: lets the rules queued after this one reach the (n+1)th such request. */
  pass?: boolean;
  /** Only requests whose path (with query) matches. */
  match?: RegExp;
  /** Only requests with this method (case-insensitive). */
  method?: string;
}

export interface ProxiedRequest {
  method: string;
  /** Path with query, as the client sent it. */
  path: string;
  /** Status sent to the client; undefined when the connection was reset or broke. */
  status?: number;
  /** Which fault was injected, if any. */
  fault?: 'status' | 'reset' | 'delay' | 'slow-body' | 'headers' | 'lost-answer' | 'cut-answer' | 'restatus' | 'rewrite';
  /** Requests being handled when this one arrived, itself included (1: it was alone). */
  inFlight: number;
}

export interface FaultProxy {
  /** "127.0.0.1:PORT" — use it as the registry host. */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** The next `n` requests matching `opts.match`/`opts.method` get the fault. Rules queue up in call order. */
  failNext(n: number, opts: FaultOptions): void;
  /** Faults not yet consumed (0 once every failNext has fired as often as asked). */
  pendingFaults(): number;
  /** Drops unconsumed faults and the request log. */
  reset(): void;
  /** Every request seen, in arrival order. */
  requests: ProxiedRequest[];
  stop(): Promise<void>;
}

interface Rule extends FaultOptions {
  left: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/** Registry error codes (distribution spec "Error Codes") for the statuses tests inject. */
function errorCode(status: number): string {
  switch (status) {
    case 400: return 'BAD_REQUEST';
    case 401: return 'UNAUTHORIZED';
    case 403: return 'DENIED';
    case 404: return 'NAME_UNKNOWN';
    case 405: return 'UNSUPPORTED';
    case 429: return 'TOOMANYREQUESTS';
    case 503: return 'UNAVAILABLE';
    default: return 'UNKNOWN';
  }
}

function forwardHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/**
 * Starts the proxy on a free loopback port. Requests keep their Host header (as behind a load
 * balancer, so the registry builds upload URLs for the proxy); absolute `Location` headers that
 * still point at the target are rewritten to the proxy so clients never bypass it.
 */
export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const agent = new http.Agent({ keepAlive: true });
  const rules: Rule[] = [];
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  let proxyOrigin = '';
  let active = 0;

  function takeRule(req: IncomingMessage): Rule | undefined {
    const rule = rules.find(
      (r) => r.left > 0 && (!r.method || r.method.toUpperCase() === req.method) && (!r.match || r.match.test(req.url ?? '')),
    );
    if (rule) rule.left--;
    return rule;
  }

  function rewriteLocation(location: string): string {
    if (!/^https?:\/\//i.test(location)) return location;
    const loc = new URL(location);
    if (loc.host !== target.host) return location;
    return proxyOrigin + loc.pathname + loc.search + loc.hash;
  }

  async function forward(
    req: IncomingMessage,
    res: ServerResponse,
    entry: ProxiedRequest,
    bodyDelayMs: number | undefined,
    responseHeaders: Record<string, string> | undefined,
    loseAnswer = false,
    cutAfterBytes?: number,
    responseStatus?: number,
    path = req.url,
  ): Promise<void> {
    const upstream = http.request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path,
      headers: forwardHeaders(req.headers),
      agent,
    });
    const responded = new Promise<IncomingMessage>((resolve, reject) => {
      upstream.once('response', resolve);
      upstream.once('error', reject);
    });
    responded.catch(() => {}); // observed below
    // Stream the request body. Not with pipeline(): an upstream failure must not destroy the
    // client's socket, which still needs the 502. A client that goes away aborts the upstream.
    req.pipe(upstream);
    req.once('error', (err) => upstream.destroy(err));
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    let up: IncomingMessage;
    try {
      up = await responded;
    } catch (err) {
      if (!res.headersSent && !res.destroyed) {
        sendError(res, 502, `fault proxy: upstream ${target.host} failed: ${String(err)}`, {});
      } else {
        res.destroy();
      }
      return;
    }
    if (loseAnswer) {
      entry.status = up.statusCode;
      up.resume();
      req.socket.destroy();
      return;
    }
    const headers = forwardHeaders(up.headers);
    if (typeof headers.location === 'string') headers.location = rewriteLocation(headers.location);
    if (responseHeaders) Object.assign(headers, Object.fromEntries(Object.entries(responseHeaders).map(([k, v]) => [k.toLowerCase(), v])));
    const status = responseStatus ?? up.statusCode ?? 502;
    res.writeHead(status, responseStatus ? http.STATUS_CODES[responseStatus] : up.statusMessage, headers);
    entry.status = status;
    if (bodyDelayMs) {
      res.flushHeaders();
      await sleep(bodyDelayMs);
    }
    if (cutAfterBytes !== undefined) {
      let sent = 0;
      for await (const chunk of up as AsyncIterable<Buffer>) {
        const part = chunk.subarray(0, Math.max(0, cutAfterBytes - sent));
        if (part.length) await new Promise<void>((resolve) => res.write(part, () => resolve()));
        sent += part.length;
        if (sent >= cutAfterBytes) break;
      }
      req.socket.destroy();
      return;
    }
    try {
      await pipeline(up, res);
    } catch {
      entry.status = undefined; // the client saw a broken body
    }
  }

  function sendError(res: ServerResponse, status: number, message: string, headers: Record<string, string>): void {
    const body = JSON.stringify({ errors: [{ code: errorCode(status), message, detail: null }] });
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'docker-distribution-api-version': 'registry/2.0',
      ...headers,
    });
    res.end(body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    active++;
    res.once('close', () => active--);
    const entry: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', inFlight: active };
    requests.push(entry);
    const rule = takeRule(req);
    if (rule?.delayMs) {
      entry.fault = 'delay';
      await sleep(rule.delayMs);
    }
    if (rule?.reset) {
      entry.fault = 'reset';
      const socket = req.socket; // req.socket is nulled once req is destroyed
      const afterBytes = rule.afterBytes ?? 0;
      if (afterBytes > 0) {
        await new Promise<void>((resolve) => {
          let seen = 0;
          req.on('data', (chunk: Buffer) => {
            seen += chunk.length;
            if (seen >= afterBytes) resolve();
          });
          req.once('end', resolve);
          req.once('close', resolve);
        });
      }
      socket.destroy();
      return;
    }
    if (rule?.status) {
      entry.fault = 'status';
      entry.status = rule.status;
      // Read the body first, as a registry would, so the client is not cut off mid-upload.
      req.resume();
      await new Promise<void>((resolve) => {
        req.once('end', resolve);
        req.once('close', resolve);
      });
      sendError(res, rule.status, `fault proxy: injected ${rule.status} for ${entry.method} ${entry.path}`, rule.headers ?? {});
      return;
    }
    if (rule?.bodyDelayMs) entry.fault = 'slow-body';
    else if (rule?.responseHeaders) entry.fault = 'headers';
    else if (rule?.loseAnswer) entry.fault = 'lost-answer';
    else if (rule?.cutAnswerAfterBytes !== undefined) entry.fault = 'cut-answer';
    else if (rule?.responseStatus) entry.fault = 'restatus';
    else if (rule?.rewritePath) entry.fault = 'rewrite';
    const path = rule?.rewritePath ? entry.path.replace(rule.rewritePath[0], rule.rewritePath[1]) : req.url;
    await forward(req, res, entry, rule?.bodyDelayMs, rule?.responseHeaders, rule?.loseAnswer, rule?.cutAnswerAfterBytes, rule?.responseStatus, path);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, 500, `fault proxy bug: ${String(err)}`, {});
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  const host = `127.0.0.1:${port}`;
  proxyOrigin = `http://${host}`;

  return {
    host,
    url: proxyOrigin,
    requests,
    failNext(n, opts) {
      if (!Number.isInteger(n) || n < 1) throw new Error(`failNext: n must be a positive integer, got ${n}`);
      if (!opts.pass && !opts.status && !opts.reset && !opts.delayMs && !opts.bodyDelayMs && !opts.responseHeaders && !opts.responseStatus && !opts.rewritePath && !opts.loseAnswer && opts.cutAnswerAfterBytes === undefined) {
        throw new Error('failNext: say what to do (pass, status, reset, delayMs, bodyDelayMs, responseHeaders, responseStatus, rewritePath, loseAnswer or cutAnswerAfterBytes)');
      }
      rules.push({ ...opts, left: n });
    },
    pendingFaults: () => rules.reduce((sum, r) => sum + r.left, 0),
    reset() {
      rules.length = 0;
      requests.length = 0;
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await closed;
    },
  };
}
