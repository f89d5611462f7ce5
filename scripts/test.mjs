#!/usr/bin/env node
// The one test command (README, .ci/run): type-check, build dist/ (the CLI end-to-end tests run
// the built bin, as users do), then every test under test/ with Node's runner.
// Usage: npm test [-- <test files or globs>]
import { spawnSync } from 'node:child_process';
import process from 'node:process';

const major = Number(process.versions.node.split('.')[0]);
console.log(`# node ${process.version} (${process.execPath})`);
if (major < 24) {
  console.error(`artificer's tests need Node.js >= 24; ${process.execPath} is ${process.version}. Run them through npm (npm test), which puts the project's Node 24 first on PATH.`);
  process.exit(1);
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json']);

const files = process.argv.slice(2);
run(process.execPath, [
  '--test',
  `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`,
  '--test-reporter=spec',
  ...(files.length ? files : ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts']),
]);
