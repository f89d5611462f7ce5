import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestMismatchError, UsageError } from '../../errors.ts';
import type { Layer } from '../../layer/layer.ts';
import { HashTap } from '../../oci/digest.ts';
import { MediaTypes, type Descriptor, type Digest, type ImageIndex } from '../../oci/types.ts';
import type { Registry } from '../../registry/types.ts';
import type { ResolvedBase } from '../base.ts';
import type { AssembledImage, Blob } from '../image.ts';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export interface OciLayoutInput {
  readonly registry: Registry;
  readonly base: ResolvedBase;
  readonly layer: Layer;
  readonly images: readonly AssembledImage[];
  readonly index: Blob | undefined;
  /** Recorded as `org.opencontainers.image.ref.name`; default `latest`. */
  readonly tag: string | undefined;
  readonly signal?: AbortSignal;
}

const exists = (path: string) => stat(path).then(() => true, () => false);
const hex = (d: Digest) => d.slice('sha256:'.length);

/**
 * Writes `stream` to `path` through a hash, and renames it into place only when the bytes hash to
 * `expected` (or, when `expected` is undefined, to whatever they hash to). A half-written blob is
 * never visible under its digest.
 */
async function writeBlobStream(dir: string, stream: Readable, expected: Digest | undefined): Promise<Digest> {
  const tmp = join(dir, `.partial-${randomBytes(6).toString('hex')}`);
  const tap = new HashTap();
  try {
    await pipeline(stream, tap, createWriteStream(tmp));
    if (expected && tap.digest !== expected) throw new DigestMismatchError('blob', expected, tap.digest);
    await rename(tmp, join(dir, hex(tap.digest)));
    return tap.digest;
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Writes the image as an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
 * every blob (base layers included, so the layout stands alone), then `index.json` last and
 * atomically. An existing layout is extended; an entry with the same ref name is replaced.
 */
export async function writeOciLayout(dir: string, input: OciLayoutInput): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layoutFile = join(dir, 'oci-layout');
  if (!(await exists(layoutFile))) await writeFile(layoutFile, JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const { registry, base, signal } = input;
  const baseLayers = new Map<Digest, Descriptor>();
  for (const image of input.images) for (const d of image.base.manifest?.layers ?? []) baseLayers.set(d.digest, d);
  for (const desc of baseLayers.values()) {
    if (await exists(join(blobs, hex(desc.digest)))) continue;
    const { stream } = await registry.getBlob(base.repo!, desc.digest, signal);
    await writeBlobStream(blobs, stream, desc.digest);
  }

  const newLayer = input.images[0]!.layers.at(-1)!;
  if (!(await exists(join(blobs, hex(newLayer.digest))))) {
    const opened = input.layer.open();
    await writeBlobStream(blobs, opened.stream, newLayer.digest);
    await opened.done;
  }

  const small: Blob[] = [...input.images.flatMap((i) => [i.config, i.manifest]), ...(input.index ? [input.index] : [])];
  for (const b of small) await writeFile(join(blobs, hex(b.descriptor.digest)), b.bytes);

  const indexFile = join(dir, 'index.json');
  let index: ImageIndex = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
  if (await exists(indexFile)) {
    try {
      index = JSON.parse(await readFile(indexFile, 'utf8')) as ImageIndex;
    } catch (err) {
      throw new UsageError(`${indexFile} exists but is not an OCI index: ${(err as Error).message}`);
    }
  }
  const tag = input.tag ?? 'latest';
  const top = (input.index ?? input.images[0]!.manifest).descriptor;
  const { platform: _platform, ...entry } = top;
  const manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] !== tag);
  manifests.push({ ...entry, annotations: { [REF_NAME_ANNOTATION]: tag } });
  const tmp = `${indexFile}.partial-${randomBytes(6).toString('hex')}`;
  await writeFile(tmp, JSON.stringify({ ...index, manifests }));
  await rename(tmp, indexFile);
}
