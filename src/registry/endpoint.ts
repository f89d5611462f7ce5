/**
 * Where a registry's API lives and whether it may be spoken to over plain http, following
 * docker: https everywhere, except hosts listed as insecure and loopback hosts
 * (`localhost`, 127.0.0.0/8, `[::1]`, any port). Docker Hub's API is at `registry-1.docker.io`.
 */
import { UsageError } from '../errors.ts';

export interface Endpoint {
  /** The registry as the user wrote it ("docker.io", "localhost:5000"). */
  readonly registry: string;
  /**
   * "https://registry-1.docker.io", "http://127.0.0.1:5000": always in WHATWG `URL.origin` form
   * (host lowercased, a default port dropped), so it compares equal to `new URL(…).origin` of any
   * URL on the registry. Credentials are sent only where the two match.
   */
  readonly origin: string;
  readonly plainHttp: boolean;
}

/** Splits host[:port], keeping IPv6 brackets: "[::1]:5000" → ["[::1]", "5000"]. */
export function splitHostPort(hostport: string): { host: string; port?: string } {
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(hostport);
  if (!m) return { host: hostport };
  return m[2] !== undefined ? { host: m[1]!, port: m[2] } : { host: m[1]! };
}

export function isLoopbackHost(hostport: string): boolean {
  const host = splitHostPort(hostport).host.toLowerCase();
  return host === 'localhost' || host === '[::1]' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * Hosts a token realm must never point at: link-local addresses (169.254.0.0/16, where cloud
 * metadata servers answer, and fe80::/10) and the GCE metadata host names. A hostile registry
 * could otherwise make us send credentials to, or read tokens from, the metadata server.
 */
export function isForbiddenRealmHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (h === 'metadata.google.internal' || h === 'metadata' || h === 'metadata.goog') return true;
  if (/^169\.254\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  if (/^fe[89ab][0-9a-f]?:/.test(h)) return true;
  if (/^::ffff:169\.254\./.test(h) || /^::ffff:a9fe:/.test(h)) return true;
  if (h === '0.0.0.0' || h === '::') return true;
  return false;
}

const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * host[:port] as plain http sees it ("Foo.io:80" → "foo.io"), or undefined when it is not a
 * valid host. Insecure registries are spoken to over http, so that is the port to drop.
 */
function httpHost(hostport: string): string | undefined {
  try {
    return new URL(`http://${hostport}`).host;
  } catch {
    return undefined;
  }
}

/** Whether `registry` (or a token realm's host[:port]) may be spoken to over plain http; case and an explicit :80 do not matter. */
export function isInsecure(registry: string, insecureRegistries: readonly string[]): boolean {
  if (isLoopbackHost(registry) || insecureRegistries.includes(registry)) return true;
  const host = httpHost(registry);
  return host !== undefined && insecureRegistries.some((r) => httpHost(r) === host);
}

export function endpointFor(registry: string, insecureRegistries: readonly string[] = []): Endpoint {
  if (DOCKER_HUB.has(registry.toLowerCase())) return { registry, origin: 'https://registry-1.docker.io', plainHttp: false };
  const plainHttp = isInsecure(registry, insecureRegistries);
  const scheme = plainHttp ? 'http' : 'https';
  let origin: string;
  try {
    origin = new URL(`${scheme}://${registry}`).origin;
  } catch {
    throw new UsageError(`invalid registry host "${registry}"`);
  }
  // A path, query or userinfo smuggled into the host would be dropped silently above.
  if (origin === 'null' || /[/?#@\\]/.test(registry)) throw new UsageError(`invalid registry host "${registry}"`);
  return { registry, origin, plainHttp };
}

/** Private, loopback or unique-local addresses (literal IPs and `localhost`): not on the internet. */
export function isPrivateHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  if (isLoopbackHost(h) || h === '::1') return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.\d{1,3}\.\d{1,3}$/.exec(h);
  if (v4) {
    const a = Number(v4[1]);
    const b = Number(v4[2]);
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127);
  }
  return /^f[cd][0-9a-f]{0,2}:/.test(h);
}

/**
 * Whether a registry may send us to `target` (a token realm, an upload `Location`, a redirect):
 * never to the metadata server or a link-local address, and to a private or loopback address
 * only when the registry itself is one (a LAN registry with its own token server is normal; a
 * public registry pointing inside our network is not). Host names are judged as written.
 */
export function mayFollow(registry: string, target: URL): boolean {
  if (target.protocol !== 'https:' && target.protocol !== 'http:') return false;
  if (isForbiddenRealmHost(target.hostname)) return false;
  return !isPrivateHost(target.hostname) || isPrivateHost(splitHostPort(registry).host);
}
