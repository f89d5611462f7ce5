// Benchmark driver: builds the same inputs with every contender, round-robin (so machine load
// hits them all alike), and prints median wall time and peak RSS as a Markdown table.
// Usage: node bench/run.ts [--runs N] [--inputs text,small,random,tiny] [--peers] [--big] [--no-cli] [--latency MS]
// See bench/README.md.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startFaultProxy, type FaultProxy } from '../test/support/fault-proxy.ts';
import { pushBusyboxBase } from '../test/support/images.ts';
import { startRegistry, type RunningRegistry } from '../test/support/registry.ts';

const root = path.resolve(import.meta.dirname, '..');
const bench = path.join(root, 'bench');
const data = path.join(bench, '.data');
const node = path.join(root, 'node_modules/.bin/node');
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    inputs: { type: 'string', default: 'text,small,random' },
    peers: { type: 'boolean', default: false },
    big: { type: 'boolean', default: false },
    'no-cli': { type: 'boolean', default: false },
    /** Every registry request of every push waits this long first (a proxy in front of the registry): a registry across a network. */
    latency: { type: 'string' },
  },
});
const runs = Number(values.runs);
const latency = values.latency === undefined ? 0 : Number(values.latency);

/** Input name → the one path (file or directory) added to the image, relative to `data`. */
const INPUTS: Record<string, string> = { text: 'text/app.log', small: 'small', random: 'random/blob.bin', big: 'big/app.log', tiny: 'tiny/hello.txt' };

function ensureInputs(): void {
  // One 6-byte file: what a push costs besides its bytes (start-up, round trips, the base).
  mkdirSync(path.join(data, 'tiny'), { recursive: true });
  writeFileSync(path.join(data, INPUTS.tiny!), 'hello\n');
  if (!['text', 'small', 'random'].every((n) => existsSync(path.join(data, INPUTS[n]!)))) {
    console.error('bench: generating inputs in bench/.data …');
    execFileSync(node, [path.join(bench, 'gen.ts'), data], { stdio: 'inherit' });
  }
  if (values.big && !existsSync(path.join(data, INPUTS.big!))) {
    console.error('bench: generating the 1 GiB input …');
    const tmp = path.join(data, '.big');
    execFileSync(node, [path.join(bench, 'gen.ts'), tmp, '1024', '0', '0'], { stdio: 'inherit' });
    mkdirSync(path.join(data, 'big'), { recursive: true });
    execFileSync('mv', [path.join(tmp, 'text/app.log'), path.join(data, INPUTS.big!)]);
    rmSync(tmp, { recursive: true, force: true });
  }
}

interface Contender {
  name: string;
  argv: (input: string, tag: string) => string[];
  /** Only for these inputs (default all). */
  only?: readonly string[];
}

/** Where the pushes go: the registry, or the proxy that delays every request to it (`--latency`). */
interface Endpoint {
  readonly host: string;
  readonly url: string;
}

function contenders(registry: Endpoint | undefined): Contender[] {
  const sh = (cmd: string) => ['sh', '-c', cmd];
  const tarOf = (input: string) => `tar -cf - -C ${data} ${INPUTS[input]}`;
  const list: Contender[] = [
    { name: 'floor1: tar \\| gzip -1 \\| sha256sum', argv: (i) => sh(`${tarOf(i)} | gzip -1 | sha256sum >/dev/null`) },
    { name: 'floor2: tar \\| pigz -p2 -1 \\| sha256sum', argv: (i) => sh(`${tarOf(i)} | pigz -p2 -1 | sha256sum >/dev/null`) },
    { name: 'artificer layer (bench/layer.ts)', argv: (i) => [node, path.join(bench, '.build/bench/layer.js'), path.join(data, INPUTS[i]!)] },
    {
      name: 'artificer layer, --max-old-space-size=32',
      argv: (i) => [node, '--max-old-space-size=32', path.join(bench, '.build/bench/layer.js'), path.join(data, INPUTS[i]!)],
    },
  ];
  const cli = path.join(root, 'dist/src/cli/main.js');
  if (registry && !values['no-cli'] && existsSync(cli)) {
    list.push({
      name: 'artificer CLI push',
      argv: (i, tag) => [node, cli, '-b', `${registry.host}/busybox:latest`, '-f', path.join(data, INPUTS[i]!), '-t', `${registry.host}/bench:${tag}`],
    });
  }
  if (registry && values.peers) {
    const containerify = path.join(bench, '.peers/node_modules/.bin/containerify');
    list.push(
      {
        name: 'containerify push',
        argv: (i, tag) => {
          const rel = INPUTS[i]!;
          return [
            node, containerify, '--fromImage', 'busybox:latest', '--fromRegistry', `${registry.url}/v2/`,
            '--toImage', `bench:${tag}`, '--toRegistry', `${registry.url}/v2/`, '--folder', path.join(data, path.dirname(rel) === '.' ? '' : path.dirname(rel)),
            '--customContent', path.basename(rel), '--allowNoPushAuth',
          ];
        },
        only: ['text', 'small', 'random', 'tiny'],
      },
      { name: 'buildah (vfs) push', argv: (i, tag) => ['bash', path.join(bench, 'buildah.sh'), registry.host, path.join(data, INPUTS[i]!), tag], only: ['text', 'small', 'random', 'tiny'] },
    );
  }
  return list;
}

interface Sample {
  wall: number;
  /**
   * User + system CPU seconds of the command, every child it waited for, and the registry while
   * it ran: on two cores, what a contender costs in CPU bounds how fast it can be.
   */
  cpu: number;
  rssKiB: number;
}

/** CPU seconds a process has used so far (utime + stime from /proc; 0 when there is none). */
function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
/** USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;

/** Runs one command under /usr/bin/time; asynchronously, so the latency proxy (in this process) keeps answering. */
async function measure(argv: string[]): Promise<Sample> {
  const registryBefore = cpuOf(registry?.pid);
  const out = path.join(bench, '.results/time.out');
  const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (status !== 0) throw new Error(`benchmark command failed (${status}): ${argv.join(' ')}\n${stderr}`);
  const [wall, user, sys, rss] = readFileSync(out, 'utf8').trim().split(/\s+/).slice(-4).map(Number);
  return { wall: wall!, cpu: user! + sys! + cpuOf(registry?.pid) - registryBefore, rssKiB: rss! };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

ensureInputs();
mkdirSync(path.join(bench, '.results'), { recursive: true });
execFileSync(node, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(bench, 'tsconfig.json')], { stdio: 'inherit' });
let registry: RunningRegistry | undefined;
let proxy: FaultProxy | undefined;
if (values.peers || (!values['no-cli'] && existsSync(path.join(root, 'dist/src/cli/main.js')))) {
  if (values.peers && !existsSync(path.join(bench, '.peers/node_modules/.bin/containerify'))) {
    console.error('bench: installing containerify into bench/.peers …');
    execFileSync('npm', ['install', '--prefix', path.join(bench, '.peers'), '--no-audit', '--no-fund', '--loglevel=error', 'containerify'], { stdio: 'inherit' });
  }
  registry = await startRegistry();
  await pushBusyboxBase(registry.host, { repository: 'busybox', format: 'docker' });
  if (latency > 0) {
    proxy = await startFaultProxy(registry.url);
    proxy.failNext(Number.MAX_SAFE_INTEGER, { delayMs: latency });
  }
}
const endpoint: Endpoint | undefined = proxy ?? registry;

const inputs = values.inputs.split(',').concat(values.big ? ['big'] : []);
const lines: string[] = [
  `Runs: ${runs} per cell, round-robin; ${latency ? `every registry request delayed ${latency} ms; ` : ''}${new Date().toISOString()}; load average at start ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
  '',
  '| input | contender | median wall s | min s | × floor2 | CPU s (median) | peak RSS MiB (max) |',
  '|---|---|---:|---:|---:|---:|---:|',
];
try {
  for (const input of inputs) {
    const cs = contenders(endpoint).filter((c) => !c.only || c.only.includes(input));
    const samples = new Map<string, Sample[]>(cs.map((c) => [c.name, []]));
    for (let r = 0; r < runs; r++) {
      for (const c of cs) {
        samples.get(c.name)!.push(await measure(c.argv(input, `${input}-${r}`)));
        process.stderr.write('.');
      }
    }
    process.stderr.write('\n');
    const floor2 = median(samples.get(cs[1]!.name)!.map((s) => s.wall));
    for (const c of cs) {
      const s = samples.get(c.name)!;
      const wall = median(s.map((x) => x.wall));
      const rss = Math.max(...s.map((x) => x.rssKiB)) / 1024;
      lines.push(`| ${input} | ${c.name} | ${wall.toFixed(2)} | ${Math.min(...s.map((x) => x.wall)).toFixed(2)} | ${(wall / floor2).toFixed(2)} | ${median(s.map((x) => x.cpu)).toFixed(2)} | ${rss.toFixed(0)} |`);
    }
  }
} finally {
  await proxy?.stop();
  await registry?.stop();
}
const report = lines.join('\n') + '\n';
const file = path.join(bench, '.results', `${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
writeFileSync(file, report);
console.log(report);
console.error(`bench: written to ${path.relative(root, file)}`);
