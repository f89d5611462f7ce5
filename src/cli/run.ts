import { createReadStream, realpathSync, statSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import { isInside, outputInside, outputProblem } from '../build/outputs/paths.ts';
import type { BuildRequest } from '../build/request.ts';
import { ArtificerError, InvalidSpecError, SourceError, UsageError, asOutputError, asSourceError } from '../errors.ts';
import type { EntrySource, LayerEntry } from '../layer/entry.ts';
import type { Logger, ProgressEvent } from '../log.ts';
import type { Reference } from '../reference/reference.ts';
import { bundleEntries } from '../source/bundle.ts';
import { directoryDestination, fileDestination, namesContents } from '../source/destination.ts';
import { localSource, parseLocalSpec, type LocalSpec } from '../source/local.ts';
import { parseSpecText, resolveTags, specToRequest, type BuildSpec } from '../spec/index.ts';
import { HELP } from './help.ts';
import { parseOptions, type CliOptions } from './options.ts';

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly signal?: AbortSignal;
  readonly version: string;
}

/** Exit status for a user mistake (bad flag, bad spec, unreadable file), as getopt tools use. */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

function stderrLogger(io: Io, verbosity: number): Logger {
  const line = (level: string, message: string, fields?: Record<string, unknown>) => {
    const extra = fields && Object.keys(fields).length ? ` ${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ')}` : '';
    io.stderr.write(`artificer: ${level}${message}${extra}\n`);
  };
  return {
    debug: (m, f) => verbosity >= 2 && line('', m, f),
    info: (m, f) => verbosity >= 1 && line('', m, f),
    warn: (m, f) => line('warning: ', m, f),
  };
}

/** A one-line byte counter for the new layer's upload, drawn only on a terminal. */
function progressPrinter(io: Io): ((e: ProgressEvent) => void) | undefined {
  if (!io.stderr.isTTY) return undefined;
  let last = 0;
  return (e) => {
    if (e.kind !== 'upload' || e.total !== undefined) return;
    const now = Date.now();
    if (!e.done && now - last < 200) return;
    last = now;
    io.stderr.write(`\r\x1b[Kuploading new layer: ${(e.bytes / 1048576).toFixed(1)} MiB${e.done ? '\n' : ''}`);
  };
}

async function readSpec(file: string): Promise<BuildSpec> {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (err) {
    throw new InvalidSpecError('', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  return parseSpecText(text, file);
}

/**
 * The files of a spec, read from disk relative to the spec file. Items keep the spec's order
 * (as the Cloud Function does): each path item's entries sorted, a bundle's entries in the
 * bundle's own order, re-packed on the fly like the function does, never extracted.
 */
function specFiles(spec: BuildSpec, dir: string): EntrySource {
  const inside = insideSpecFolder(dir);
  const items = spec.files.map((f): EntrySource => {
    if (f.kind === 'path') {
      const source = localSource([{ from: f.from, to: f.to, ...(f.mode !== undefined ? { mode: f.mode } : {}) }], { cwd: dir });
      return Object.assign((() => source()) as EntrySource, {
        check: async () => {
          inside(f.from);
          await source.check?.();
        },
      });
    }
    const file = path.resolve(dir, f.bundle);
    const entries = (): AsyncIterable<LayerEntry> =>
      bundleEntries(
        async () => {
          const stream = createReadStream(file);
          await once(stream, 'open').catch((err: unknown) => {
            throw asSourceError(err, f.bundle);
          });
          return stream;
        },
        { to: f.to, origin: f.bundle, mapReadError: (err) => asSourceError(err, f.bundle) },
      );
    return Object.assign(entries, {
      check: async () => {
        inside(f.bundle);
        const st = await stat(file).catch((err: unknown) => {
          throw asSourceError(err, f.bundle);
        });
        if (!st.isFile()) throw new SourceError(f.bundle, 'is not a file (a bundle is a .tar or .tar.gz file)');
      },
    });
  });
  // Everything is checked before the first request to a registry, as for --files.
  return Object.assign(
    async function* entries() {
      for (const item of items) yield* item();
    },
    {
      async check(): Promise<void> {
        for (const item of items) await item.check?.();
      },
    },
  );
}

/**
 * A spec's paths stay in the spec's folder (docs/cloud-function.md), here as in the bucket:
 * followed through symlinks too, as docker build keeps COPY inside its context. Returns the check.
 */
function insideSpecFolder(dir: string): (rel: string) => void {
  return (rel) => {
    let real: string;
    try {
      real = realpathSync(path.resolve(dir, rel));
    } catch {
      return; // missing: the source's own check names it
    }
    if (!isInside(dir, real)) {
      throw new SourceError(rel, `leads outside the spec's folder (to ${real}): a spec's paths must stay inside ${realpathSync(dir)}`);
    }
  };
}

/**
 * An output written inside the files being added would change the tree between the layer's
 * passes (and a tarball would pack the previous one): refused before anything is read or pushed.
 */
function refuseOutputsInside(sources: readonly string[], outputs: { ociLayout?: string; tarball?: string }): void {
  for (const [kind, out] of [['oci', outputs.ociLayout], ['tarball', outputs.tarball]] as const) {
    const inside = out === undefined ? undefined : outputInside(sources, out);
    if (inside !== undefined) {
      throw new UsageError(`--output ${kind}:${out} is inside the files to add (${inside}): the image would contain its own output; write it elsewhere`);
    }
  }
}

/**
 * Outputs are written after the push, once the tags are live: one that cannot be written (a
 * missing directory, a typo) is refused here, before the first request to a registry.
 */
function refuseUnwritableOutputs(opts: CliOptions, io: Io): void {
  const outputs = [
    ['--output oci:', opts.ociLayout, 'directory'],
    ['--output tarball:', opts.tarball, 'file'],
    ['--digest-file ', opts.digestFile, 'written-file'],
  ] as const;
  for (const [flag, given, kind] of outputs) {
    const problem = given === undefined ? undefined : outputProblem(path.resolve(io.cwd, given), kind);
    if (problem) throw new UsageError(`${flag}${given}: ${problem}; nothing was pushed`);
  }
}

/** Turns parsed options into the one build request the engine takes. */
async function toRequest(opts: CliOptions, io: Io): Promise<BuildRequest> {
  refuseUnwritableOutputs(opts, io);
  const outputs = { ...(opts.ociLayout ? { ociLayout: path.resolve(io.cwd, opts.ociLayout) } : {}), ...(opts.tarball ? { tarball: path.resolve(io.cwd, opts.tarball) } : {}) };
  if (opts.spec !== undefined) {
    const file = path.resolve(io.cwd, opts.spec);
    const spec = await readSpec(file);
    refuseOutputsInside(
      spec.files.map((f) => path.resolve(path.dirname(file), f.kind === 'path' ? f.from : f.bundle)),
      outputs,
    );
    const { request, target } = specToRequest(spec, specFiles(spec, path.dirname(file)), { sourceDateEpoch: opts.mtime });
    let registry: readonly Reference[] = request.outputs.registry;
    if (opts.target) registry = [opts.target, ...resolveTags(opts.target, [...opts.tags, ...spec.tags])];
    else if (opts.tags.length) registry = [...registry, ...resolveTags(target, opts.tags)];
    return {
      ...request,
      platforms: opts.platforms === 'default' ? request.platforms : opts.platforms,
      layer: { ...request.layer, keepSpecialBits: opts.keepSpecialBits },
      outputs: { registry, ...outputs },
    };
  }
  const files = opts.files.map(parseLocalSpec);
  refuseOutputsInside(
    files.map((f) => path.resolve(io.cwd, f.from)),
    outputs,
  );
  return {
    base: opts.base!,
    platforms: opts.platforms,
    files: localSource(files, { cwd: io.cwd }),
    layer: { mtime: opts.mtime, ...(opts.chown ? { chown: opts.chown } : {}), keepSpecialBits: opts.keepSpecialBits },
    config: {
      env: opts.env,
      ...(opts.cmd ? { cmd: opts.cmd } : {}),
      ...(opts.entrypoint ? { entrypoint: opts.entrypoint } : {}),
      ...(opts.workdir !== undefined ? { workdir: opts.workdir } : {}),
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      labels: opts.labels,
      exposedPorts: opts.exposedPorts,
      createdBy: describeLayer(files, io.cwd),
    },
    annotations: opts.annotations,
    // Without --target every --tag is a full reference (a bare one was refused): push to those.
    outputs: { registry: opts.target ? [opts.target, ...resolveTags(opts.target, opts.tags)] : opts.tags.filter((t) => typeof t !== 'string'), ...outputs },
  };
}

/**
 * The history entry's `created_by`: where the layer puts things, like a Dockerfile's
 * `COPY … /dest` line, e.g. `artificer: COPY /server /etc/app/`. Destinations only, never the
 * source paths as typed: `./server`, `server` and `/ci/job-1234/server` build the same layer
 * and must give the same image digest (and a CI runner's paths do not belong in an image).
 */
function describeLayer(files: readonly LocalSpec[], cwd: string): string {
  const dests = files.map(({ from, to }) => {
    const abs = path.resolve(cwd, from);
    let dir = false;
    try {
      dir = statSync(abs).isDirectory();
    } catch {
      // missing, a symlink loop, a name too long: the walk reports it as the source error it is
    }
    // Where the walk puts it, by the same rules (so /usr/bin/, /usr/bin/. and usr/bin/server agree).
    const dest = dir ? directoryDestination(to, namesContents(from) ? '' : path.basename(abs), from) : fileDestination(to, path.basename(abs), from);
    return dir ? `/${dest}${dest === '' ? '' : '/'}` : `/${dest}`;
  });
  return `artificer: COPY ${dests.join(' ')}`.slice(0, 1024);
}

/**
 * The whole CLI as a function of its arguments and I/O, returning the exit status. Only this
 * function decides the exit code; nothing else in the library prints or exits.
 */
export async function runCli(argv: readonly string[], io: Io): Promise<number> {
  let opts: CliOptions | undefined;
  try {
    opts = parseOptions(argv, io.env);
    if (opts.command === 'help') {
      io.stdout.write(HELP);
      return 0;
    }
    if (opts.command === 'version') {
      io.stdout.write(`artificer ${io.version}\n`);
      return 0;
    }
    const logger = stderrLogger(io, opts.verbosity);
    for (const w of opts.warnings) logger.warn(w);
    const request = await toRequest(opts, io);
    // Loaded only when there is something to build: the registry client brings undici and the
    // Node modules it needs (~0.15 s and ~25 MiB), which --help, --version and a mistyped flag
    // or file do not.
    const [{ build }, { RegistryClient }, { dockerConfigCredentials }] = await Promise.all([
      import('../build/build.ts'),
      import('../registry/client.ts'),
      import('../registry/credentials.ts'),
    ]);
    const registry = new RegistryClient({
      credentials: dockerConfigCredentials({ env: io.env }),
      insecureRegistries: opts.insecureRegistries,
      logger,
      // The user names the registries: an on-prem one may send blob downloads to its LAN storage.
      privateRedirects: true,
      userAgent: `artificer/${io.version}`,
    });
    const onProgress = progressPrinter(io);
    const result = await build(request, {
      registry,
      logger,
      ...(onProgress ? { onProgress } : {}),
      ...(io.signal ? { signal: io.signal } : {}),
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    });
    for (const image of result.images) io.stdout.write(`${image}\n`);
    if (!result.images.length) logger.info('written', { digest: result.digest });
    if (opts.digestFile) {
      const file = path.resolve(io.cwd, opts.digestFile);
      await writeFile(file, `${result.digest}\n`).catch((err: unknown) => {
        throw asOutputError(file, err);
      });
    }
    return 0;
  } catch (err) {
    return report(err, io, opts?.verbosity ?? 0);
  }
}

const USER_MISTAKES = new Set(['ARTIFICER_USAGE', 'ARTIFICER_INVALID_REFERENCE', 'ARTIFICER_INVALID_SPEC', 'ARTIFICER_SOURCE', 'ARTIFICER_PLATFORM_MISMATCH']);

function report(err: unknown, io: Io, verbosity: number): number {
  if (err instanceof ArtificerError) {
    io.stderr.write(`artificer: error: ${err.message}\n`);
    if (verbosity >= 2 && err.cause) io.stderr.write(`artificer: caused by: ${String((err.cause as Error).message ?? err.cause)}\n`);
    return USER_MISTAKES.has(err.code) ? EXIT_USAGE : EXIT_FAILURE;
  }
  // Not ours: a bug. Say so, with the stack, since there is nothing better to show.
  io.stderr.write(`artificer: internal error (please report): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return EXIT_FAILURE;
}
