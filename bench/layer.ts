// Micro-benchmark of the layer pipeline alone: local files → tar → gzip → digests, drained.
// Usage: node bench/layer.ts [--level N] [--concurrency N] [--member-bytes N] SRC[:DEST]...
// Prints one JSON line: digest, diffId, size, wall ms.
import { parseArgs } from 'node:util';
import { createLayer } from '../src/layer/layer.ts';
import { localSource, parseLocalSpec } from '../src/source/local.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    level: { type: 'string' },
    concurrency: { type: 'string' },
    'member-bytes': { type: 'string' },
  },
});
if (positionals.length === 0) {
  console.error('usage: node bench/layer.ts [--level N] [--concurrency N] [--member-bytes N] SRC[:DEST]...');
  process.exit(2);
}
const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v));
const gzip = {
  ...(values.level ? { level: num(values.level)! } : {}),
  ...(values.concurrency ? { concurrency: num(values.concurrency)! } : {}),
  ...(values['member-bytes'] ? { memberBytes: num(values['member-bytes'])! } : {}),
};
const started = performance.now();
const layer = createLayer(localSource(positionals.map(parseLocalSpec)), { mtime: 0 }, { gzip });
const result = await layer.measure();
console.log(JSON.stringify({ ...result, ms: Math.round(performance.now() - started) }));
