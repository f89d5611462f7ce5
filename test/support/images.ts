// Base images for the tests, built from Debian's busybox-static by independent tools (system tar
// + gzip for the layer, crane for the manifests) so that artificer's own code never vouches for
// its own input. No internet: the only bytes are /bin/busybox and a few text files.
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { exec, tool } from './tools.ts';
import { processTempDir } from './tmp.ts';

/** The PATH alpine sets; the busybox base carries it so env-merge tests have a real base PATH. */
export const BASE_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** A second base variable, so tests can check base env survives (or is overridden). */
export const BASE_VAR = 'BASE_VAR=from-base';
/** Env of the busybox base, in order. */
export const BASE_ENV: readonly string[] = [BASE_PATH, BASE_VAR];
export const BASE_CMD: readonly string[] = ['sh'];

/** Applets linked under /bin (all → busybox). */
export const BUSYBOX_APPLETS: readonly string[] = [
  'cat', 'chmod', 'cp', 'cut', 'date', 'echo', 'env', 'false', 'find', 'grep', 'head', 'id', 'ln',
  'ls', 'md5sum', 'mkdir', 'mv', 'printenv', 'printf', 'pwd', 'readlink', 'rm', 'sed', 'sh',
  'sha256sum', 'sleep', 'sort', 'stat', 'tail', 'test', 'touch', 'tr', 'true', 'uname', 'wc',
  'whoami', 'xargs',
];

export type ImageFormat = 'docker' | 'oci';

export interface PushBaseOptions {
  repository: string;
  /** Default "latest". */
  tag?: string;
  format: ImageFormat;
  /** More than one (e.g. ['linux/amd64', 'linux/arm64']) → an OCI index / Docker manifest list. */
  platforms?: string[];
  /** Pass --insecure to crane (plain HTTP). crane already uses HTTP for 127.0.0.1/localhost. */
  insecure?: boolean;
  /** For registries with basic or token auth. */
  auth?: { username: string; password: string };
}

export interface PushedImage {
  /** host/repository:tag */
  reference: string;
  /** Digest of what the tag points at (the index when several platforms were asked). */
  digest: string;
  /** host/repository@digest */
  pinned: string;
  /** Per platform ("linux/amd64" → manifest digest); one entry for a single-platform image. */
  manifests: Record<string, string>;
}

export const MEDIA_TYPES = {
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
} as const;

let layerPromise: Promise<string> | undefined;

/**
 * The busybox rootfs as a gzipped tarball, built once per test process with GNU tar
 * (sorted, root-owned, mtime 0) and `gzip -n`, so its digest is stable across runs.
 */
export function busyboxLayer(): Promise<string> {
  layerPromise ??= buildLayer();
  return layerPromise;
}

async function buildLayer(): Promise<string> {
  const dir = processTempDir('busybox');
  const root = path.join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'root', 'tmp', 'usr/bin', 'usr/local/bin']) {
    await mkdir(path.join(root, d), { recursive: true });
  }
  await exec('cp', ['/bin/busybox', path.join(root, 'bin/busybox')]);
  for (const applet of BUSYBOX_APPLETS) await symlink('busybox', path.join(root, 'bin', applet));
  await writeFile(
    path.join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  await writeFile(path.join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await chmod(path.join(root, 'tmp'), 0o1777);
  await chmod(path.join(root, 'root'), 0o700);
  const tarFile = path.join(dir, 'layer.tar');
  await exec(tool('tar'), [
    '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--format=gnu',
    '-C', root, '-cf', tarFile, 'bin', 'etc', 'root', 'tmp', 'usr',
  ]);
  await exec(tool('gzip'), ['-n', '-9', tarFile]);
  return `${tarFile}.gz`;
}

async function dockerConfig(host: string, auth: PushBaseOptions['auth']): Promise<NodeJS.ProcessEnv> {
  if (!auth) return process.env;
  const dir = processTempDir('docker-config');
  const token = Buffer.from(`${auth.username}:${auth.password}`).toString('base64');
  await writeFile(path.join(dir, 'config.json'), JSON.stringify({ auths: { [host]: { auth: token } } }));
  return { ...process.env, DOCKER_CONFIG: dir };
}

function lastDigest(out: string): string {
  const m = /sha256:[0-9a-f]{64}/g;
  const all = out.match(m);
  const d = all?.at(-1);
  if (!d) throw new Error(`no digest in crane output: ${out}`);
  return d;
}

/**
 * Pushes the busybox base to `host/repository:tag` in the asked format, with Env
 * {@link BASE_ENV}, Cmd {@link BASE_CMD} and the right os/architecture per platform, and
 * verifies with `crane manifest` that the registry serves the asked media types.
 * Non-native platforms reuse the same (amd64) busybox bytes: they exist for selection tests, not
 * to be run.
 */
export function pushBusyboxBase(host: string, opts: PushBaseOptions): Promise<PushedImage> {
  // One push at a time per test process: concurrent `crane append`s of the same layer into the
  // same repository race inside distribution 2.8 (seen: DIGEST_INVALID under load), and the
  // tests that build several bases in a Promise.all must not depend on that race.
  const run = pushQueue.then(() => pushBase(host, opts));
  pushQueue = run.catch(() => {});
  return run;
}

let pushQueue: Promise<unknown> = Promise.resolve();

async function pushBase(host: string, opts: PushBaseOptions): Promise<PushedImage> {
  const crane = tool('crane');
  const layer = await busyboxLayer();
  const env = await dockerConfig(host, opts.auth);
  const global = opts.insecure ? ['--insecure'] : [];
  const repo = `${host}/${opts.repository}`;
  const reference = `${repo}:${opts.tag ?? 'latest'}`;
  const platforms = opts.platforms ?? ['linux/amd64'];
  const multi = platforms.length > 1;
  const run = (args: string[]) => exec(crane, [...args, ...global], { env });

  const manifests: Record<string, string> = {};
  for (const platform of platforms) {
    // crane appends onto an empty image (Docker media types unless --oci-empty-base) …
    const appended = await run([
      'append', '-f', layer, '-t', reference, ...(opts.format === 'oci' ? ['--oci-empty-base'] : []),
    ]);
    // … then sets config in a second manifest; for an index, children are pushed by digest only.
    const mutated = await run([
      'mutate', `${repo}@${lastDigest(appended.stdout + appended.stderr)}`,
      ...BASE_ENV.flatMap((e) => ['--env', e]),
      '--cmd', BASE_CMD.join(','),
      '--set-platform', platform,
      ...(multi ? ['--repo', repo] : ['-t', reference]),
    ]);
    manifests[platform] = lastDigest(mutated.stdout);
  }

  let digest: string;
  if (multi) {
    const out = await run([
      'index', 'append', ...Object.values(manifests).flatMap((d) => ['-m', `${repo}@${d}`]),
      '-t', reference, ...(opts.format === 'docker' ? ['--docker-empty-base'] : []),
    ]);
    digest = lastDigest(out.stdout);
  } else {
    digest = manifests[platforms[0]!]!;
  }

  // Independent check that what the registry serves has the asked media types.
  const served = JSON.parse((await run(['manifest', reference])).stdout) as { mediaType?: string; manifests?: unknown[] };
  const types = MEDIA_TYPES[opts.format];
  const want = multi ? types.index : types.manifest;
  if (served.mediaType !== want) {
    throw new Error(`pushBusyboxBase: ${reference} is ${served.mediaType}, expected ${want}`);
  }
  const head = (await run(['digest', reference])).stdout.trim();
  if (head !== digest) throw new Error(`pushBusyboxBase: ${reference} resolves to ${head}, expected ${digest}`);
  return { reference, digest, pinned: `${repo}@${digest}`, manifests };
}

/** Reads one manifest (or index) and its media type through crane, for assertions in tests. */
export async function craneManifest(reference: string, opts: { insecure?: boolean; platform?: string } = {}): Promise<Record<string, unknown>> {
  const args = ['manifest', reference, ...(opts.insecure ? ['--insecure'] : []), ...(opts.platform ? ['--platform', opts.platform] : [])];
  return JSON.parse((await exec(tool('crane'), args)).stdout) as Record<string, unknown>;
}

/** Reads an image's config blob through crane. */
export async function craneConfig(reference: string, opts: { insecure?: boolean; platform?: string } = {}): Promise<Record<string, unknown>> {
  const args = ['config', reference, ...(opts.insecure ? ['--insecure'] : []), ...(opts.platform ? ['--platform', opts.platform] : [])];
  return JSON.parse((await exec(tool('crane'), args)).stdout) as Record<string, unknown>;
}
