import { Transform, pipeline, type Readable } from 'node:stream';
import { AbortedError, UsageError, asOutputError } from '../errors.ts';
import { createLayer, reusedLayer, type Layer, type LayerDigests } from '../layer/layer.ts';
import { silentLogger, type ProgressEvent } from '../log.ts';
import { FamilyTypes, type Descriptor, type Family } from '../oci/types.ts';
import { repositoryName } from '../reference/reference.ts';
import type { Repository } from '../registry/types.ts';
import { resolveBase, type ResolvedBase } from './base.ts';
import { assembleImage, assembleIndex, type AssembledImage, type Blob } from './image.ts';
import { writeOciLayout } from './outputs/oci-layout.ts';
import { writeTarball } from './outputs/tarball.ts';
import { baseBlobTransfers, groupByRepository, pushToRegistries, settleAll, type RepoTargets } from './publish.ts';
import { BlobPusher } from './push.ts';
import type { BuildContext, BuildRequest, BuildResult } from './request.ts';

/** Upload concurrency when the caller sets none: enough to overlap HEADs and copies, gentle on registries. */
export const DEFAULT_CONCURRENCY = 4;

/**
 * Builds one image (or one per platform, plus an index) from a base, one new layer and config
 * changes, and writes it to every requested output.
 *
 * Order on a registry is always blobs → configs → manifests → tags: a tag is written only once
 * every blob it names is present in that repository, so a failure leaves no half-pushed tag.
 * The new layer is produced as a stream and uploaded in one request; its digest is known only
 * once it has been consumed. Outputs on disk re-open the layer (the same bytes, by construction).
 */
export async function build(req: BuildRequest, ctx: BuildContext): Promise<BuildResult> {
  const logger = ctx.logger ?? silentLogger;
  const signal = ctx.signal;
  const targets = groupByRepository(req.outputs.registry);
  if (!targets.length && !req.outputs.ociLayout && !req.outputs.tarball) {
    throw new UsageError('nothing to do: give a target to push to, or an output (oci:DIR, tarball:FILE)');
  }

  // A layer an earlier build made of these same files, still in the first target: nothing to read.
  const reused = await findKnownLayer(req, targets, ctx);
  if (reused) logger.info('layer reused', { digest: reused.digest, diffId: reused.diffId, size: reused.size });
  else await preflight(req.files);
  // The new layer's bytes are the files' alone, whatever the base. So its pass (and, when
  // pushing, its upload to the first target) starts now, while the base is resolved: that is a
  // few round trips (ping, token, manifest, config) which used to come first. A base that cannot
  // be used stops it; nothing is tagged, and the registry expires the upload session it opened:
  // the upload is committed only once the base has proved usable (else a small layer, sent before
  // the base's error came, was left in the target, which a registry may create for it).
  // A layer that fails stops the base's blob copies in turn (the pusher runs under the same signal).
  const stopLayer = new AbortController();
  const layerSignal = signal ? AbortSignal.any([signal, stopLayer.signal]) : stopLayer.signal;
  const layer = reused ? reusedLayer(reused) : createLayer(req.files, req.layer, { signal: layerSignal, ...(req.layerLimits ? { limits: req.layerLimits } : {}) });
  const pusher = new BlobPusher(ctx.registry, {
    concurrency: ctx.concurrency ?? DEFAULT_CONCURRENCY,
    logger,
    ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
    signal: layerSignal,
  });
  const started = Date.now();
  const baseUsable = Promise.withResolvers<void>();
  baseUsable.promise.catch(() => {}); // awaited by the upload's commit, if it gets that far
  const upload = targets.length && !reused ? uploadNewLayer(pusher, layer, targets[0]!.repo, baseUsable.promise, ctx.onProgress) : undefined;
  const newLayer = upload?.committed ?? layer.measure();
  let layerFailed = false;
  newLayer.catch(() => (layerFailed = true)); // awaited once the base is resolved

  // The first image's config is known only once the base is resolved and the layer measured;
  // its upload session is opened now, so the config then goes in one request instead of two.
  const reserved = upload ? ctx.registry.reserveUpload?.(targets[0]!.repo, layerSignal) : undefined;
  try {
    let base: ResolvedBase;
    try {
      base = await resolveBase(req, ctx.registry, signal);
      if (req.outputs.tarball && base.multiPlatform) {
        throw new UsageError('a docker tarball holds a single platform; choose one with --platform, or use oci:DIR for several');
      }
    } catch (err) {
      stopLayer.abort(err);
      baseUsable.reject(err);
      await newLayer.catch(() => {});
      throw err;
    }
    baseUsable.resolve();
    for (const image of base.images) {
      const triggers = image.config?.config?.OnBuild;
      if (Array.isArray(triggers) && triggers.length) {
        logger.warn(`the base image has ONBUILD triggers, which artificer cannot run; they are dropped from the new image (as docker build clears them after running them): ${JSON.stringify(triggers).slice(0, 200)}`);
        break;
      }
    }
    if (base.family === 'docker' && Object.keys(req.annotations).length) {
      // The OCI layout holds the OCI twin of the Docker image, which does carry them.
      const layout = req.outputs.ociLayout ? '; the OCI layout (--output oci:) has them' : '';
      logger.warn(`annotations are left out of the pushed image: the base image uses Docker manifests, which have no annotations (use an OCI base)${layout}`);
    }
    logger.info('base resolved', {
      base: base.reference ? String(base.reference) : 'scratch',
      family: base.family,
      platforms: base.images.map((i) => i.platform),
    });

    // While the new layer uploads, the first target gets the base's blobs (not for a layer that has
    // already failed) and, as soon as the layer's pass has measured it, each image's config: its
    // upload then overlaps the layer's commit instead of following it. A layer that fails stops
    // these transfers and is reported once they have stopped: none keeps going after the build
    // has failed.
    const alongside: Promise<void>[] = upload && !layerFailed ? baseBlobTransfers(pusher, base, targets[0]!.repo) : [];
    let digests: LayerDigests;
    let assembled: Assembled;
    try {
      assembled = assembleAll(base, req, upload ? await Promise.race([upload.measured, newLayer]) : await newLayer);
      if (upload) {
        for (const [i, { config }] of assembled.images.entries()) {
          alongside.push(pusher.ensure(targets[0]!.repo, config.descriptor, { kind: 'bytes', bytes: config.bytes, ...(i === 0 && reserved ? { reserved } : {}) }));
        }
      }
      digests = await newLayer;
    } catch (err) {
      stopLayer.abort(err);
      await Promise.allSettled([newLayer, ...alongside]);
      throw err;
    }
    await settleAll(alongside);
    logger.info('layer built', { digest: digests.digest, diffId: digests.diffId, size: digests.size, ms: Date.now() - started });
    const { layer: layerDescriptor, images, index, assemble } = assembled;
    // An OCI layout holds OCI media types (skopeo and umoci look for nothing else): a Docker-family
    // image is written as its OCI twin, the same config and layer bytes under OCI names.
    const oci = req.outputs.ociLayout ? (base.family === 'oci' ? { images, index } : assemble('oci')) : undefined;
    // The result names what the build wrote: what was pushed, else the OCI layout's image (a
    // Docker base's manifest digest would be in no output then), else the tarball's.
    const written = !targets.length && oci ? oci : { images, index };
    const top: Blob = written.index ?? written.images[0]!.manifest;

    if (targets.length) await pushToRegistries(pusher, ctx, base, images, index, targets, layerDescriptor);
    if (req.outputs.ociLayout && oci) {
      const dir = req.outputs.ociLayout;
      await writeOciLayout(dir, { registry: ctx.registry, base, layer, images: oci.images, index: oci.index, tags: targets.flatMap((t) => t.tags), ...(signal ? { signal } : {}) }).catch(
        outputFailed(dir, signal),
      );
    }
    if (req.outputs.tarball) {
      const file = req.outputs.tarball;
      await writeTarball(file, { registry: ctx.registry, base, layer, image: images[0]!, repoTags: req.outputs.registry.map(String), ...(signal ? { signal } : {}) }).catch(
        outputFailed(file, signal),
      );
    }

    return {
      digest: top.descriptor.digest,
      mediaType: top.descriptor.mediaType,
      images: targets.map((t) => `${repositoryName(t.repo)}@${top.descriptor.digest}`),
      tags: targets.flatMap((t) => t.references.map(String)),
      manifests: written.images.map((i) => ({
        ...(base.multiPlatform ? { platform: i.platform } : {}),
        digest: i.manifest.descriptor.digest,
        mediaType: i.manifest.descriptor.mediaType,
        size: i.manifest.descriptor.size,
      })),
      layerBytes: digests.size,
      layer: digests,
      layerReused: reused !== undefined,
    };
  } finally {
    await reserved?.release(); // a no-op once the config has used it
  }
}

/**
 * What a failed output write throws: an {@link AbortedError} once the build was aborted (Node's
 * stream `AbortError` is not ours, and would read as an internal error), else the write's own
 * error as an output error naming the path.
 */
function outputFailed(where: string, signal: AbortSignal | undefined): (err: unknown) => never {
  return (err) => {
    if (signal?.aborted) throw new AbortedError(`build aborted while writing ${where}`, { cause: err });
    throw asOutputError(where, err);
  };
}

/**
 * The request's {@link BuildRequest.knownLayer} when the build can take it as it is: it pushes to
 * a registry only (an OCI layout or a tarball needs the layer's bytes), and the first target
 * repository holds the blob (the others get it from there, as they would an uploaded one).
 * A failed check is not the build's failure: the files are read instead.
 */
async function findKnownLayer(req: BuildRequest, targets: readonly RepoTargets[], ctx: BuildContext): Promise<LayerDigests | undefined> {
  const known = req.knownLayer;
  if (!known || !targets.length || req.outputs.ociLayout || req.outputs.tarball) return undefined;
  try {
    if (await ctx.registry.hasBlob(targets[0]!.repo, known.digest, ctx.signal)) return known;
    ctx.logger?.debug('known layer not in the target; reading the files', { digest: known.digest });
  } catch (err) {
    if (ctx.signal?.aborted) throw err;
    ctx.logger?.debug('known layer could not be checked; reading the files', { digest: known.digest, error: err instanceof Error ? err.message : String(err) });
  }
  return undefined;
}

/**
 * Starts one pass over the files and stops at the first entry. Sources validate everything they
 * can before yielding (the local source checks every path, type and permission), so a missing
 * file or a FIFO is reported before the first request to a registry, not as a failed upload.
 */
async function preflight(files: BuildRequest['files']): Promise<void> {
  if (files.check) return files.check();
  const it = files()[Symbol.asyncIterator]();
  try {
    await it.next();
  } finally {
    await it.return?.();
  }
}

interface Assembled {
  /** The new layer's descriptor, typed for the base's family. */
  readonly layer: Descriptor;
  /** One image per platform of the base, in the base's family. */
  readonly images: AssembledImage[];
  /** The index naming them, when the base is multi-platform. */
  readonly index: Blob | undefined;
  /** The same images (and index) in another family: an OCI layout holds the OCI twin of a Docker image. */
  readonly assemble: (family: Family) => { images: AssembledImage[]; index: Blob | undefined };
}

/** Every image the build makes (config, manifest; an index for several platforms), from the base and the new layer's digests. */
function assembleAll(base: ResolvedBase, req: BuildRequest, digests: LayerDigests): Assembled {
  const layer: Descriptor = { mediaType: FamilyTypes[base.family].layer, digest: digests.digest, size: digests.size };
  const assemble = (family: Family): { images: AssembledImage[]; index: Blob | undefined } => {
    const as = family === base.family ? base : { ...base, family };
    const images = base.images.map((image) => assembleImage(as, image, req, { descriptor: layer, diffId: digests.diffId }));
    return { images, index: base.multiPlatform ? assembleIndex(family, images, req.annotations) : undefined };
  };
  return { layer, ...assemble(base.family), assemble };
}

interface NewLayerUpload {
  /** The layer's digests once a pass has streamed all of it, before the registry has committed it. */
  readonly measured: Promise<LayerDigests>;
  /** The same digests once the registry has committed the blob under them. */
  readonly committed: Promise<LayerDigests>;
}

/**
 * Streams the new layer into the first target repository. The upload is committed under the
 * digest the layer computed of exactly the bytes it streamed, and the registry checks it against
 * what it received; not before `commit` has resolved (the client commits once `measured` has).
 * `measured` never settles when no pass completes; `committed` then rejects.
 */
function uploadNewLayer(
  pusher: BlobPusher,
  layer: Layer,
  repo: Repository,
  commit: Promise<void>,
  onProgress: ((e: ProgressEvent) => void) | undefined,
): NewLayerUpload {
  let last: Promise<LayerDigests> | undefined;
  const firstPass = Promise.withResolvers<LayerDigests>();
  const uploaded = pusher.uploadStream(
    repo,
    () => {
      const opened = layer.open();
      last = opened.done;
      // Every pass yields the same digests (the layer fails a pass that does not), so the first
      // that completes tells the build what to assemble while the registry commits.
      last.then(firstPass.resolve, () => {}); // a failed attempt's digests are never read
      const measured = Promise.all([opened.done, commit]).then(([digests]) => digests);
      measured.catch(() => {});
      return { stream: onProgress ? countBytes(opened.stream, onProgress) : opened.stream, measured };
    },
    'new layer',
  );
  return { measured: firstPass.promise, committed: uploaded.then(() => last!) };
}

/** Reports the bytes of the new layer as they leave, for a progress line (`total` is unknown). */
function countBytes(stream: Readable, onProgress: (e: ProgressEvent) => void): Readable {
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      onProgress({ kind: 'upload', bytes, done: false });
      cb(null, chunk);
    },
    flush(cb) {
      onProgress({ kind: 'upload', bytes, done: true });
      cb();
    },
  });
  return pipeline(stream, counter, () => {});
}
