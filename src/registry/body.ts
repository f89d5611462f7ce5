import type { Dispatcher } from 'undici';

/** Response bodies read into memory, never past a limit: a registry can answer with anything. */

type Body = Dispatcher.ResponseData['body'];

/**
 * A response body read whole, but never more than `max` bytes into memory: a registry that
 * answers with a huge (or endless) body gets `tooLarge()` thrown, and the rest is not read.
 */
export async function readBounded(body: Body, max: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.byteLength;
    if (total > max) throw tooLarge(); // leaving the loop destroys the body: the rest is not read
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** The first `max` bytes of a body (an error message, say); the rest is not read. */
export async function readPrefix(body: Body, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    total += chunk.byteLength;
    if (total >= max) break; // leaving the loop destroys the body: the rest is not read
  }
  return Buffer.concat(chunks).subarray(0, max);
}
