#!/usr/bin/env node
/**
 * The `artificer` executable: wires the process (argv, env, stdio, signals) to {@link runCli}
 * and sets the exit code. Ctrl-C aborts the build through an AbortSignal; a second Ctrl-C
 * exits at once.
 */
import { readFileSync } from 'node:fs';
import module from 'node:module';
import os from 'node:os';
import process from 'node:process';
import v8 from 'node:v8';

// Cache compiled code of our modules and undici's between runs (in the OS temp dir; skipped
// silently where it cannot be written): a CI job runs the CLI cold every time, and start-up is
// a visible part of a small build.
module.enableCompileCache?.();
// Keep V8's young generation at its initial size instead of letting it double up to 16 MiB per
// semi-space. A build allocates little JS but many Buffers (file reads, gzip members); their
// memory is freed only when a GC finds them dead, and with a small young generation scavenges
// come often enough to free them before they pile up. Peak RSS of a push drops by ~10–45 MiB
// (bench/README.md), wall time does not change measurably. A GC sizing heuristic, read whenever
// new space would grow, so setting it at start-up is safe (unlike heap limits, fixed at start).
v8.setFlagsFromString('--semi-space-growth-factor=1');
// Keep undici's HTTP parser (llhttp, WebAssembly) on V8's baseline compiler. Its hot functions
// were otherwise recompiled by the optimizing tier on a background thread, whose ~10 MiB of
// scratch memory stayed in that thread's malloc arena for the rest of the run: peak RSS of every
// push −10 MiB (text 112 → 102), no measurable change in time (a build parses a few dozen small
// responses). Read when a Wasm module is compiled, which undici does at its first connection.
v8.setFlagsFromString('--wasm-tiering-budget=2000000000');
const { runCli } = await import('./run.ts');

// src/cli/main.ts runs from the source tree, dist/src/cli/main.js from the build: one level apart.
const packageJson = new URL(import.meta.url.includes('/dist/src/') ? '../../../package.json' : '../../package.json', import.meta.url);
const pkg = JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string };

const controller = new AbortController();
// The shell's convention for a process stopped by a signal: 128 + its number, so 130 for
// SIGINT (Ctrl-C) and 143 for SIGTERM (what CI runners and `docker stop` send).
let signalled: number | undefined;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    const status = 128 + os.constants.signals[sig];
    if (controller.signal.aborted) process.exit(status);
    process.stderr.write(`\nartificer: ${sig}: stopping (press again to exit at once)\n`);
    signalled = status;
    controller.abort();
  });
}

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: controller.signal,
  version: pkg.version,
});
process.exitCode = signalled ?? code;
