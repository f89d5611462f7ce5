import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestMismatchError, OutputError, asOutputError } from '../../errors.ts';
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
  /**
   * Each recorded as an `org.opencontainers.image.ref.name` entry for the one image (skopeo,
   * umoci and crane then find it as `DIR:TAG` by any of them); `latest` when there are none.
   */
  readonly tags: readonly string[];
  readonly signal?: AbortSignal;
}

const exists = (path: string) => stat(path).then(() => true, () => false);
const hex = (d: Digest) => d.slice('sha256:'.length);

/**
 * Writes `stream` to `path` through a hash, and renames it into place only when the bytes hash to
 * `expected` (or, when `expected` is undefined, to whatever they hash to). A half-written blob is
 * never visible under its digest.
 *
 * `measured` is the new layer's own verdict on the pass (`OpenedLayer.done`), awaited before the
 * digest is compared: when the files changed since the layer was first built it says so, where a
 * bare digest mismatch would not say why. The bytes compared were produced or received here and
 * already verified against the registry's digest on the way in, so a mismatch blames the content.
 */
async function writeBlobStream(dir: string, stream: Readable, expected: Digest | undefined, measured?: Promise<unknown>): Promise<Digest> {
  const tmp = join(dir, `.partial-${randomBytes(6).toString('hex')}`);
  const tap = new HashTap();
  try {
    await pipeline(stream, tap, createWriteStream(tmp));
    await measured;
    if (expected && tap.digest !== expected) throw new DigestMismatchError('blob', expected, tap.digest, 'content');
    await rename(tmp, join(dir, hex(tap.digest)));
    return tap.digest;
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * The `index.json` of an existing layout, or undefined when there is none. Read and checked before
 * anything is written, so a directory that is not an OCI layout is refused whole instead of failing
 * after its blobs were added, and an index without a `manifests` array is an {@link OutputError}
 * naming the directory rather than a TypeError.
 */
async function readLayoutIndex(dir: string): Promise<ImageIndex | undefined> {
  const file = join(dir, 'index.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw asOutputError(file, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new OutputError(dir, `its index.json is not JSON (${(err as Error).message}), so it is not an OCI image layout to add to`, { cause: err });
  }
  const problem = indexProblem(parsed);
  if (problem) throw new OutputError(dir, `its index.json is not an OCI image index (${problem}), so it is not an OCI image layout to add to`);
  return parsed as ImageIndex;
}

/** What keeps `value` from being an image index this writer can extend, if anything. */
function indexProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const index = value as Record<string, unknown>;
  if (index.schemaVersion !== 2) {
    return 'schemaVersion' in index ? `schemaVersion is ${JSON.stringify(index.schemaVersion)}, not 2` : 'no schemaVersion';
  }
  const manifests = index.manifests;
  if (!Array.isArray(manifests)) return 'no "manifests" array';
  const bad = manifests.findIndex((m: unknown) => typeof m !== 'object' || m === null || Array.isArray(m));
  return bad >= 0 ? `manifests[${bad}] is not an object` : undefined;
}

/**
 * Writes the image as an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md):
 * every blob (base layers included, so the layout stands alone), then `index.json` last and
 * atomically. An existing layout is extended; an entry with the same ref name is replaced.
 * Several tags give several entries for the one manifest: `skopeo inspect oci:DIR:TAG` and
 * `umoci unpack --image DIR:TAG` accept that, but `oci:DIR` without a tag is then ambiguous to
 * skopeo ("more than one image"), as it is for any layout holding two entries.
 *
 * `dir` must not be inside the files the layer is built from (see `outputInside`): the layer is
 * re-read here, after the layout's first files were created.
 */
export async function writeOciLayout(dir: string, input: OciLayoutInput): Promise<void> {
  const existing = await readLayoutIndex(dir);
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
    await writeBlobStream(blobs, opened.stream, newLayer.digest, opened.done);
  }

  const small: Blob[] = [...input.images.flatMap((i) => [i.config, i.manifest]), ...(input.index ? [input.index] : [])];
  for (const b of small) await writeFile(join(blobs, hex(b.descriptor.digest)), b.bytes);

  const indexFile = join(dir, 'index.json');
  const index: ImageIndex = existing ?? { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
  const tags = input.tags.length ? [...new Set(input.tags)] : ['latest'];
  const top = (input.index ?? input.images[0]!.manifest).descriptor;
  const { platform: _platform, ...entry } = top;
  const manifests = index.manifests.filter((m) => !tags.includes(m.annotations?.[REF_NAME_ANNOTATION] ?? ''));
  for (const tag of tags) manifests.push({ ...entry, annotations: { [REF_NAME_ANNOTATION]: tag } });
  const tmp = `${indexFile}.partial-${randomBytes(6).toString('hex')}`;
  await writeFile(tmp, JSON.stringify({ ...index, manifests }));
  await rename(tmp, indexFile);
}
