// Small tar archives built in memory, for tests of the bundle re-packer: each entry is a
// tar-stream header (mtime defaults to the epoch) and an optional body.
import tarStream from 'tar-stream';

export async function tarOf(entries: Array<[Record<string, unknown>, string?]>): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const [h, body] of entries) {
    const header = { mtime: new Date(0), ...h } as tarStream.Header;
    if (body === undefined) pack.entry(header);
    else pack.entry(header, body);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}
