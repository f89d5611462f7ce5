/**
 * Where a registry's API lives and whether it may be spoken to over plain http, following
 * docker: https everywhere, except hosts listed as insecure and loopback hosts
 * (`localhost`, 127.0.0.0/8, `[::1]`, any port). Docker Hub's API is at `registry-1.docker.io`.
 */
import { isIPv4, isIPv6 } from 'node:net';
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
 * What a literal address (or `localhost`) is, judged by its bytes, not its spelling: WHATWG URL
 * parsing writes `[::ffff:127.0.0.1]` as `[::ffff:7f00:1]`, and a string match on the dotted
 * form let a public registry send us to loopback that way.
 * - `forbidden`: never follow, whoever asks: link-local (169.254.0.0/16, where cloud metadata
 *   servers answer, and fe80::/10), AWS's IPv6 metadata address fd00:ec2::254, "this host"
 *   (0.0.0.0/8, `::`, which Linux connects to loopback), multicast and reserved ranges.
 * - `private`: loopback, RFC 1918, carrier-grade NAT (100.64.0.0/10), unique-local fc00::/7,
 *   site-local fec0::/10, `localhost` and `*.localhost` (RFC 6761).
 * - `public`: any other literal address.
 * - undefined: a host name, judged as written.
 * An IPv6 address that carries an IPv4 one is judged by that IPv4 address: mapped ::ffff:0:0/96,
 * translated ::ffff:0:0:0/96, compatible ::/96 and NAT64 64:ff9b::/96.
 */
export type AddressKind = 'forbidden' | 'private' | 'public';

export function addressKind(hostname: string): AddressKind | undefined {
  const h = canonicalHost(hostname);
  if (h === 'localhost' || h.endsWith('.localhost')) return 'private';
  if (isIPv4(h)) return ipv4Kind(h.split('.').map(Number));
  if (!isIPv6(h)) return undefined;
  const g = ipv6Groups(h);
  const zeros = (n: number): boolean => g.slice(0, n).every((x) => x === 0);
  if (zeros(8)) return 'forbidden'; // ::
  if (zeros(7) && g[7] === 1) return 'private'; // ::1
  const embedded = embeddedIPv4(g);
  if (embedded) return ipv4Kind(embedded);
  if ((g[0]! & 0xffc0) === 0xfe80 || (g[0]! & 0xff00) === 0xff00) return 'forbidden';
  if (g[0] === 0xfd00 && g[1] === 0x0ec2 && g.slice(2, 7).every((x) => x === 0) && g[7] === 0x254) return 'forbidden';
  if ((g[0]! & 0xfe00) === 0xfc00 || (g[0]! & 0xffc0) === 0xfec0) return 'private';
  return 'public';
}

/** The IPv4 address an IPv6 one carries (see {@link addressKind}), as four bytes. */
function embeddedIPv4(g: readonly number[]): number[] | undefined {
  const zeros = (n: number): boolean => g.slice(0, n).every((x) => x === 0);
  const embedded =
    (zeros(5) && g[5] === 0xffff) || // ::ffff:a.b.c.d
    (zeros(4) && g[4] === 0xffff && g[5] === 0) || // ::ffff:0:a.b.c.d
    zeros(6) || // ::a.b.c.d
    (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)); // 64:ff9b::a.b.c.d
  return embedded ? [g[6]! >> 8, g[6]! & 0xff, g[7]! >> 8, g[7]! & 0xff] : undefined;
}

function ipv4Kind([a, b]: number[]): AddressKind {
  if (a === 0 || (a === 169 && b === 254) || a! >= 224) return 'forbidden';
  if (a === 127 || a === 10 || (a === 172 && b! >= 16 && b! <= 31) || (a === 192 && b === 168) || (a === 100 && b! >= 64 && b! <= 127)) {
    return 'private';
  }
  return 'public';
}

/** A host as URL parsing writes it (0x7f000001 and 127.1 are 127.0.0.1), lowercase, without brackets or a trailing dot. */
function canonicalHost(hostname: string): string {
  let h = hostname.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
  try {
    h = new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    // not a host URL parsing accepts: judged as written
  }
  return h;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing dotted quad folded in). */
function ipv6Groups(address: string): number[] {
  let s = address.replace(/%.*$/, '');
  const quad = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (quad) {
    const [a, b, c, d] = quad.slice(2).map(Number) as [number, number, number, number];
    s = `${quad[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (part: string): number[] => (part ? part.split(':').map((x) => parseInt(x, 16)) : []);
  const [head, tail] = s.split('::') as [string, string | undefined];
  if (tail === undefined) return parse(head);
  const h = parse(head);
  const t = parse(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata', 'metadata.goog']);

/**
 * Hosts a token realm, redirect or upload Location must never point at: the metadata server
 * under its names and addresses, and the other `forbidden` addresses of {@link addressKind}. A
 * hostile registry could otherwise make us send credentials to, or read tokens from, it.
 */
export function isForbiddenRealmHost(hostname: string): boolean {
  return METADATA_HOSTS.has(canonicalHost(hostname)) || addressKind(hostname) === 'forbidden';
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

/** Literal addresses and `localhost` names that are not on the internet (see {@link addressKind}). */
export function isPrivateHost(hostname: string): boolean {
  const kind = addressKind(hostname);
  return kind === 'private' || kind === 'forbidden';
}

/**
 * The private network a `private` address of {@link addressKind} is on: `loopback` (127.0.0.0/8,
 * ::1, `localhost` names) or `lan` (RFC 1918, 100.64.0.0/10, fc00::/7, fec0::/10). Undefined for
 * any other address, and for a host name.
 */
export type PrivateNetwork = 'loopback' | 'lan';

export function privateNetwork(hostname: string): PrivateNetwork | undefined {
  if (addressKind(hostname) !== 'private') return undefined;
  const h = canonicalHost(hostname);
  if (h === 'localhost' || h.endsWith('.localhost')) return 'loopback';
  if (isIPv4(h)) return h.startsWith('127.') ? 'loopback' : 'lan';
  const g = ipv6Groups(h);
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return 'loopback'; // ::1
  return embeddedIPv4(g)?.[0] === 127 ? 'loopback' : 'lan';
}

const NO_NETWORKS: ReadonlySet<PrivateNetwork> = new Set();

/**
 * The private networks a registry's host name resolved to (its addresses, as DNS gave them): empty
 * unless every address is private, so a name with a public address is a public registry.
 */
export function registryNetworks(addresses: readonly string[]): ReadonlySet<PrivateNetwork> {
  const networks = addresses.map(privateNetwork);
  if (!networks.length || networks.some((n) => n === undefined)) return NO_NETWORKS;
  return new Set(networks as PrivateNetwork[]);
}

/**
 * Whether a registry may send us to `target` (a token realm, an upload `Location`, a redirect):
 * never to the metadata server or a link-local address, and to a private or loopback address
 * only when the registry itself is one (a LAN registry with its own token server is normal; a
 * public registry pointing inside our network is not). Target host names are judged as written.
 *
 * The registry is one when written as a private address, or when its name resolved to addresses
 * on the target's private network (`networks`, see {@link registryNetworks}): Harbor or
 * distribution with an S3 storage driver on MinIO redirects blob GETs to the MinIO address
 * (http://10.1.2.3:9000/…), while users address the registry by name (harbor.corp.example).
 * Only the same network: a LAN registry may not send us to our own loopback.
 */
export function mayFollow(registry: string, target: URL, networks: ReadonlySet<PrivateNetwork> = NO_NETWORKS): boolean {
  if (target.protocol !== 'https:' && target.protocol !== 'http:') return false;
  if (isForbiddenRealmHost(target.hostname)) return false;
  if (!isPrivateHost(target.hostname) || isPrivateHost(splitHostPort(registry).host)) return true;
  const network = privateNetwork(target.hostname);
  return network !== undefined && networks.has(network);
}
