/**
 * Image references, following the grammar of distribution/reference (reference.go, regexp.go)
 * and docker's normalisation (normalize.go, `ParseNormalizedNamed`):
 *
 *     reference  := name [ ":" tag ] [ "@" digest ]
 *     name       := [ domain "/" ] path-component [ "/" path-component ]*
 *     domain     := host [ ":" port ]        host: DNS name, IPv4, or "[" IPv6 "]"
 *     path-comp  := [a-z0-9]+ ( ( [_.] | "__" | "-"+ ) [a-z0-9]+ )*
 *     tag        := [\w][\w.-]{0,127}
 *     digest     := "sha256:" 64 lowercase hex digits (the only algorithm artificer supports)
 *
 * The first path component is a registry only if it contains "." or ":", is "localhost", or
 * has an uppercase letter (docker's rule); otherwise the registry is Docker Hub (`docker.io`)
 * and a single-component name gets the `library/` namespace. `index.docker.io` is folded into
 * `docker.io`. A reference with neither tag nor digest gets the tag `latest`.
 */
import { InvalidReferenceError } from '../errors.ts';
import type { Digest } from '../oci/types.ts';
import type { Repository } from '../registry/types.ts';

export interface Reference {
  /** host[:port] as written ("docker.io", "localhost:5000", "[::1]:5000"). */
  readonly registry: string;
  /** Path within the registry, lowercase ("library/ubuntu", "team/app"). */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
  /** The canonical form: `registry/repository[:tag][@digest]`. */
  toString(): string;
}

export const DEFAULT_REGISTRY = 'docker.io';
export const DEFAULT_TAG = 'latest';
/** distribution's NameTotalLengthMax, checked (as docker does) on the normalised `registry/repository`. */
export const NAME_TOTAL_LENGTH_MAX = 255;

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const IPV6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const HOST = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6})`;
const DOMAIN_RE = new RegExp(`^${HOST}(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

function format(r: { registry: string; repository: string; tag?: string | undefined; digest?: string | undefined }): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

function make(registry: string, repository: string, tag: string | undefined, digest: Digest | undefined): Reference {
  const ref: Reference = {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
    toString() {
      return format(this);
    },
  };
  return Object.freeze(ref);
}

/** Splits "host/path" the way docker does; see the module comment. */
function splitDomain(name: string): { registry: string; path: string } {
  const i = name.indexOf('/');
  const first = i < 0 ? '' : name.slice(0, i);
  if (i < 0 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    return { registry: DEFAULT_REGISTRY, path: name };
  }
  return { registry: first === 'index.docker.io' ? DEFAULT_REGISTRY : first, path: name.slice(i + 1) };
}

/**
 * Parses and normalises an image reference. Throws {@link InvalidReferenceError} with the
 * specific reason ("repository name must be lowercase", "invalid tag", …).
 */
export function parseReference(s: string): Reference {
  const fail = (reason: string): never => {
    throw new InvalidReferenceError(s, reason);
  };
  if (s.length === 0) fail('reference is empty');
  if (/\s/.test(s)) fail('reference contains whitespace');

  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (DIGEST_RE.test(d)) digest = d as Digest;
    else if (d.startsWith('sha256:')) fail(`invalid digest "${d}": sha256 digests have 64 lowercase hex digits`);
    else if (DIGEST_SHAPE_RE.test(d)) fail(`unsupported digest algorithm in "${d}" (only sha256)`);
    else fail(`invalid digest "${d}"`);
  }

  // A tag follows the last ':' unless that ':' belongs to the registry's port (a '/' comes after it).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0 && !rest.slice(colon + 1).includes('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) fail(`invalid tag "${tag}" (allowed: letters, digits, "_", "." and "-", up to 128 characters, not starting with "." or "-")`);
  }

  const name = rest;
  if (name.length === 0) fail('repository name is empty');
  if (HEX64_RE.test(name)) fail('repository name cannot be a 64-character hexadecimal string (did you mean @sha256:…?)');

  const { registry, path } = splitDomain(name);
  if (!DOMAIN_RE.test(registry)) fail(`invalid registry host "${registry}"`);
  if (path.length === 0) fail('repository name is empty');
  if (path !== path.toLowerCase()) fail('repository name must be lowercase');
  const components = path.split('/');
  for (const c of components) {
    if (c.length === 0) fail('repository name has an empty path component');
    if (!PATH_COMPONENT_RE.test(c)) {
      fail(`invalid repository path component "${c}" (lowercase letters and digits, separated by ".", "_", "__" or dashes)`);
    }
  }
  const repository = registry === DEFAULT_REGISTRY && components.length === 1 ? `library/${path}` : path;
  if (`${registry}/${repository}`.length > NAME_TOTAL_LENGTH_MAX) {
    fail(`repository name is longer than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }

  return make(registry, repository, tag ?? (digest === undefined ? DEFAULT_TAG : undefined), digest);
}

/** The same repository with `tag` (any digest dropped: a tag names something else). */
export function withTag(ref: Pick<Reference, 'registry' | 'repository'>, tag: string): Reference {
  if (!TAG_RE.test(tag)) throw new InvalidReferenceError(`${ref.registry}/${ref.repository}:${tag}`, `invalid tag "${tag}"`);
  return make(ref.registry, ref.repository, tag, undefined);
}

/** The same repository pinned to `digest` (any tag dropped). */
export function withDigest(ref: Pick<Reference, 'registry' | 'repository'>, digest: Digest): Reference {
  if (!DIGEST_RE.test(digest)) throw new InvalidReferenceError(`${ref.registry}/${ref.repository}@${digest}`, `invalid digest "${digest}"`);
  return make(ref.registry, ref.repository, undefined, digest);
}

export function repositoryOf(ref: Pick<Reference, 'registry' | 'repository'>): Repository {
  return { registry: ref.registry, repository: ref.repository };
}

/** Whether `text` is a bare tag ("v1.2", "latest"), as opposed to a full reference. */
export function isTag(text: string): boolean {
  return TAG_RE.test(text);
}

/** `registry/repository`: how messages, logs and results name a repository. */
export function repositoryName(repo: Repository): string {
  return `${repo.registry}/${repo.repository}`;
}

/** What to put in a manifest URL: the digest when there is one, else the tag. */
export function manifestReferenceOf(ref: Reference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

/** `registry/repository[:tag][@digest]`. */
export function formatReference(ref: { registry: string; repository: string; tag?: string | undefined; digest?: string | undefined }): string {
  return format(ref);
}
