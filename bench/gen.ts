// Generates the benchmark inputs (deterministic, seeded): a text file, many small files, an
// incompressible file. Usage: node bench/gen.ts DIR [textMiB=200] [smallCount=5000] [randomMiB=100]
import { createCipheriv } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { finished } from 'node:stream/promises';

const [dir = 'bench/.data', textMiB = '200', smallCount = '5000', randomMiB = '100'] = process.argv.slice(2);

/** xorshift32: a tiny seeded PRNG so every run and machine gets the same inputs. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

const rand = rng(42);
const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'so', 'vi', 'de', 'an', 'or', 'el', 'is', 'um', 'pre', 'con', 'ing', 'tion', 'er', 'st'];
const vocab = Array.from({ length: 4000 }, () => {
  const n = 1 + Math.floor(rand() * 4);
  return Array.from({ length: n }, () => syllables[Math.floor(rand() * syllables.length)]).join('');
});

/** Log-like text: timestamps, levels, words drawn with a skewed distribution. ~3:1 with gzip -1. */
function textBlock(bytes: number): Buffer {
  const lines: string[] = [];
  let n = 0;
  let ts = 1_700_000_000_000;
  while (n < bytes) {
    ts += Math.floor(rand() * 5000);
    const words = Array.from({ length: 6 + Math.floor(rand() * 10) }, () => vocab[Math.floor(rand() ** 2 * vocab.length)]);
    const line = `${new Date(ts).toISOString()} ${['INFO', 'WARN', 'DEBUG', 'ERROR'][Math.floor(rand() ** 3 * 4)]} req=${Math.floor(rand() * 1e6)} ${words.join(' ')}\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

async function writeBig(file: string, mib: number, block: () => Buffer): Promise<void> {
  const out = createWriteStream(file);
  for (let i = 0; i < mib; i++) {
    if (!out.write(block())) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  out.end();
  await finished(out);
}

mkdirSync(path.join(dir, 'text'), { recursive: true });
mkdirSync(path.join(dir, 'random'), { recursive: true });
await writeBig(path.join(dir, 'text', 'app.log'), Number(textMiB), () => textBlock(1 << 20));

const small = path.join(dir, 'small');
for (let i = 0; i < Number(smallCount); i++) {
  const sub = path.join(small, `pkg${String(i % 50).padStart(2, '0')}`, `mod${String(i % 7)}`);
  if (i < 350) mkdirSync(sub, { recursive: true });
  writeFileSync(path.join(sub, `file${i}.js`), textBlock(Math.floor(2048 + rand() * 16384)));
}

const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
const zeros = Buffer.alloc(1 << 20);
await writeBig(path.join(dir, 'random', 'blob.bin'), Number(randomMiB), () => cipher.update(zeros));
console.error(`bench inputs written to ${dir}`);
