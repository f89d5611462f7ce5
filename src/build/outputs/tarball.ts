import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { Layer } from '../../layer/layer.ts';
import type { Digest } from '../../oci/types.ts';
import type { Registry } from '../../registry/types.ts';
import type { ResolvedBase } from '../base.ts';
import type { AssembledImage } from '../image.ts';

export interface TarballInput {
  readonly registry: Registry;
  readonly base: ResolvedBase;
  readonly layer: Layer;
  readonly image: AssembledImage;
  /** `RepoTags` of the archive's manifest.json: what `docker load` names the image. */
  readonly repoTags: readonly string[];
  readonly signal?: AbortSignal;
}

const hex = (d: Digest) => d.slice('sha256:'.length);

/**
 * Writes a `docker load`-able archive in the layout `docker save` and go-containerregistry's
 * tarball package use: `manifest.json`, the config as `<hex>.json`, each layer as
 * `<hex>.tar.gz` (docker load decompresses gzipped layers). A tar header needs the size first:
 * the build has already produced the new layer once (pushed or measured), so its descriptor
 * holds the size, and the layer is re-opened here to write the same bytes rather than staged in
 * a temp file (a pass that differs fails, see `createLayer`). The archive appears under its name
 * only when complete.
 */
export async function writeTarball(file: string, input: TarballInput): Promise<void> {
  const { image, registry, base, signal } = input;
  const newLayer = image.layers.at(-1)!;

  const mtime = new Date(0);
  const pack = tar.pack();
  const tmp = `${file}.partial-${randomBytes(6).toString('hex')}`;
  const written = pipeline(pack, createWriteStream(tmp));
  // Observed now so an early failure (the directory does not exist) is not an unhandled
  // rejection while entries are still being produced; awaited below.
  written.catch(() => {});
  const put = (name: string, size: number, body: Readable | Buffer) =>
    new Promise<void>((resolve, reject) => {
      if (Buffer.isBuffer(body)) {
        pack.entry({ name, size, mode: 0o644, mtime }, body, (err) => (err ? reject(err) : resolve()));
        return;
      }
      const entry = pack.entry({ name, size, mode: 0o644, mtime }, (err) => (err ? reject(err) : resolve()));
      pipeline(body, entry).catch(reject);
    });

  try {
    const layerNames: string[] = [];
    for (const desc of image.layers) {
      const name = `${hex(desc.digest)}.tar.gz`;
      layerNames.push(name);
      if (desc === newLayer) {
        const opened = input.layer.open();
        await put(name, newLayer.size, opened.stream);
        await opened.done;
      } else {
        const { stream } = await registry.getBlob(base.repo!, desc.digest, signal);
        await put(name, desc.size, stream);
      }
    }
    const configName = `${hex(image.config.descriptor.digest)}.json`;
    await put(configName, image.config.bytes.length, image.config.bytes);
    const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: [...input.repoTags], Layers: layerNames }]));
    await put('manifest.json', manifest.length, manifest);
    pack.finalize();
    await written;
    await rename(tmp, file);
  } catch (err) {
    pack.destroy(err as Error);
    // When the file itself failed (no such directory, disk full), that is the error to report,
    // not tar-stream's "already destroyed" that the next entry ran into.
    const writeError: unknown = await written.then(() => undefined, (e: unknown) => e);
    await rm(tmp, { force: true });
    throw writeError ?? err;
  }
}
