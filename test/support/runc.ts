// Runs an image the way a user would, with tools artificer has nothing to do with:
// skopeo (pull / convert into an OCI layout) → umoci (unpack into a runtime bundle) → runc.
// Needs root (runc without rootless, umoci unpack without --rootless).
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { exec, tool, type ExecResult } from './tools.ts';
import { tempDir } from './tmp.ts';

export interface RunOptions {
  /** Replace the image's Entrypoint+Cmd (process.args), e.g. ['sh', '-c', 'echo hi']. */
  args?: string[];
  /** Extra KEY=VALUE entries; a key already set by the image is overridden. */
  env?: string[];
  /** Override the working directory. */
  cwd?: string;
  /** Kill the container after this many ms (default 60 000). */
  timeoutMs?: number;
}

export interface PullOptions extends RunOptions {
  /** Use plain HTTP / skip TLS verification (default true: test registries are on loopback http). */
  insecure?: boolean;
  /** Credentials for basic- or token-auth registries. */
  creds?: { username: string; password: string };
  /** Pick this platform out of an index ("linux/arm64"); default: the host's. */
  platform?: string;
}

/** Output of a container run. `code` is the container's exit status (never rejects on non-zero). */
export type RunResult = ExecResult;

/** The parts of an OCI image config the tests look at (as skopeo converted it). */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[]; WorkingDir?: string; User?: string; Labels?: Record<string, string> };
  rootfs?: { type: string; diff_ids: string[] };
  history?: unknown[];
}

/** What umoci/runc made of the image, for assertions besides the output. */
export interface RunDetails extends RunResult {
  /** The image config that was run. */
  image: ImageConfig;
  /** process.args, process.env, process.cwd and process.user from the generated runtime config. */
  process: { args: string[]; env: string[]; cwd: string; user: { uid: number; gid: number } };
}

let counter = 0;

/** Pulls `reference` from a registry and runs it; see {@link RunOptions}. */
export async function pullAndRun(reference: string, opts: PullOptions = {}): Promise<RunDetails> {
  const src = [`docker://${reference}`];
  const flags = [`--src-tls-verify=${opts.insecure === false ? 'true' : 'false'}`];
  if (opts.creds) flags.push('--src-creds', `${opts.creds.username}:${opts.creds.password}`);
  else flags.push('--src-no-creds');
  return copyAndRun(src, flags, opts);
}

/** Runs image `tag` of an OCI image layout already on disk (not modified: it is copied first). */
export function runLayout(ociDir: string, tag: string, opts: RunOptions = {}): Promise<RunDetails> {
  return copyAndRun([`oci:${path.resolve(ociDir)}:${tag}`], [], opts);
}

/** Runs an image from a `docker save` / `docker load` tarball. */
export function runDockerArchive(file: string, opts: RunOptions = {}): Promise<RunDetails> {
  return copyAndRun([`docker-archive:${path.resolve(file)}`], [], opts);
}

function platformFlags(platform: string | undefined): string[] {
  if (!platform) return [];
  const [os, arch, variant] = platform.split('/');
  if (!os || !arch) throw new Error(`platform must look like os/arch[/variant], got ${platform}`);
  return ['--override-os', os, '--override-arch', arch, ...(variant ? ['--override-variant', variant] : [])];
}

async function copyAndRun(src: string[], srcFlags: string[], opts: PullOptions): Promise<RunDetails> {
  const work = await tempDir('run');
  try {
    const layout = path.join(work.path, 'oci');
    const bundle = path.join(work.path, 'bundle');
    // skopeo normalises whatever it reads (Docker v2 schema 2, OCI, docker-archive) into an OCI
    // layout — and is a second, independent parser of what artificer produced.
    await exec(tool('skopeo'), [
      '--insecure-policy', ...platformFlags(opts.platform), 'copy', '--quiet', ...srcFlags, ...src, `oci:${layout}:img`,
    ], { timeoutMs: 300_000 });
    const image = await readImageConfig(layout);
    await exec(tool('umoci'), ['unpack', '--image', `${layout}:img`, bundle]);
    return await runBundle(bundle, work.path, image, opts);
  } finally {
    await work.remove();
  }
}

/** The OCI image config (`config` member: Env, Cmd, …) of the only image in a layout skopeo wrote. */
async function readImageConfig(layout: string): Promise<ImageConfig> {
  const blob = async (digest: string): Promise<unknown> =>
    JSON.parse(await readFile(path.join(layout, 'blobs', ...digest.split(':')), 'utf8'));
  const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifest = (await blob(index.manifests[0]!.digest)) as { config: { digest: string } };
  return (await blob(manifest.config.digest)) as ImageConfig;
}

async function runBundle(bundle: string, work: string, image: ImageConfig, opts: RunOptions): Promise<RunDetails> {
  const configFile = path.join(bundle, 'config.json');
  const config = JSON.parse(await readFile(configFile, 'utf8')) as {
    process: RunDetails['process'] & { terminal?: boolean };
  };
  const proc = config.process;
  proc.terminal = false;
  // umoci adds TERM=xterm for its terminal=true default; drop it unless the image set it.
  const imageSetsTerm = (image.config?.Env ?? []).some((e) => e.startsWith('TERM='));
  proc.env = proc.env.filter((e) => e !== 'TERM=xterm' || imageSetsTerm);
  if (opts.args) proc.args = opts.args;
  if (opts.cwd) proc.cwd = opts.cwd;
  for (const entry of opts.env ?? []) {
    const key = entry.split('=', 1)[0];
    proc.env = proc.env.filter((e) => !e.startsWith(`${key}=`)).concat(entry);
  }
  await writeFile(configFile, JSON.stringify(config));

  const runc = tool('runc');
  const root = path.join(work, 'runc-root');
  await mkdir(root);
  const id = `artificer-${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`;
  try {
    const res = await exec(runc, ['--root', root, 'run', '--bundle', bundle, id], {
      allowFailure: true,
      timeoutMs: opts.timeoutMs ?? 60_000,
    });
    return { ...res, image, process: { args: proc.args, env: proc.env, cwd: proc.cwd, user: proc.user } };
  } finally {
    await exec(runc, ['--root', root, 'delete', '-f', id], { allowFailure: true });
  }
}
