/**
 * undici's request API and its Agent, loaded without undici's index.
 *
 * Why: `import 'undici'` evaluates all of undici (fetch, WebSocket, EventSource, caches, cookie
 * and mock APIs, proxy agents, HTTP/2): ~110 ms and ~5–10 MiB of every CLI run on this project's
 * VMs, a quarter of a small push, for two functions.
 *
 * These are undici's own modules (`lib/api/api-request.js` is what its `request` export calls,
 * bound to a dispatcher; `lib/dispatcher/agent.js` its `Agent`), not its documented API, so
 * package.json pins undici's exact version and test/unit/http.test.ts fails if they move or
 * change shape. Types come from undici's public declarations.
 *
 * Caveat: requests that name no dispatcher use this module's own Agent, not one installed with
 * undici's `setGlobalDispatcher`; a program embedding the library that needs a proxy or custom
 * TLS passes its dispatcher to `RegistryClient` (`dispatcher` option) instead.
 */
import { createRequire } from 'node:module';
import type { Agent as UndiciAgent, Dispatcher } from 'undici';

const require = createRequire(import.meta.url);
const requestApi = require('undici/lib/api/api-request.js') as (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;
const Agent = require('undici/lib/dispatcher/agent.js') as typeof UndiciAgent;

export interface HttpRequestOptions extends Omit<Dispatcher.RequestOptions, 'origin' | 'path'> {
  /** Where to send it (a test's Agent, say); default one keep-alive Agent shared by the process's registry traffic. */
  readonly dispatcher?: Dispatcher;
}

let shared: Dispatcher | undefined;

/** The dispatcher requests use when they name none: created on first use, kept for the process. */
export function defaultDispatcher(): Dispatcher {
  return (shared ??= new Agent());
}

/** undici's `request(url, options)`: the same options and response, without loading undici's index. */
export function request(url: string | URL, opts: HttpRequestOptions): Promise<Dispatcher.ResponseData> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const { dispatcher = defaultDispatcher(), ...rest } = opts;
  return requestApi.call(dispatcher, { ...rest, origin: u.origin, path: `${u.pathname}${u.search}` });
}
