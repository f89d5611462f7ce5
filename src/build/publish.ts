/**
 * What a build writes to registries once its layer is known: the blobs in every target
 * repository, then manifests, then tags, in that order, so that a failure never leaves a tag
 * naming something missing.
 */
import { AbortedError, DigestMismatchError, TagsIncompleteError, UsageError, withContext } from '../errors.ts';
import type { Descriptor } from '../oci/types.ts';
import { repositoryName, repositoryOf, type Reference } from '../reference/reference.ts';
import type { Repository } from '../registry/types.ts';
import type { ResolvedBase } from './base.ts';
import type { AssembledImage, Blob } from './image.ts';
import type { BlobPusher } from './push.ts';
import type { BuildContext } from './request.ts';

/** The tags a build writes in one repository, in the order given. */
export interface RepoTargets {
  readonly repo: Repository;
  readonly tags: string[];
  readonly references: Reference[];
}

/** Groups the registry targets by repository; a target must name a tag. */
export function groupByRepository(refs: readonly Reference[]): RepoTargets[] {
  const groups = new Map<string, RepoTargets>();
  for (const ref of refs) {
    if (!ref.tag) throw new UsageError(`target ${ref} must name a tag (a digest is what the push produces, it cannot be chosen)`);
    const repo = repositoryOf(ref);
    const key = `${repo.registry}/${repo.repository}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { repo, tags: [], references: [] }));
    if (!g.tags.includes(ref.tag)) {
      g.tags.push(ref.tag);
      g.references.push(ref);
    }
  }
  return [...groups.values()];
}

/** Copies (or mounts, or finds) every layer of the base in `repo`, one transfer per distinct blob. */
export function baseBlobTransfers(pusher: BlobPusher, base: ResolvedBase, repo: Repository): Promise<void>[] {
  if (!base.repo) return [];
  const from = base.repo;
  const seen = new Set<string>();
  const out: Promise<void>[] = [];
  for (const image of base.images) {
    for (const desc of image.manifest?.layers ?? []) {
      if (seen.has(desc.digest)) continue;
      seen.add(desc.digest);
      out.push(pusher.ensure(repo, desc, { kind: 'registry', repo: from }));
    }
  }
  return out;
}

/** Waits for every task, then throws the first failure (in task order). */
export async function settleAll(tasks: Promise<unknown>[]): Promise<void> {
  for (const r of await Promise.allSettled(tasks)) if (r.status === 'rejected') throw r.reason;
}

/**
 * Everything after the new layer, in every target repository: blobs (base layers, the new layer,
 * each platform's config; the first repository has most of them already), per-platform
 * manifests when an index names them, then the tags.
 */
export async function pushToRegistries(
  pusher: BlobPusher,
  ctx: BuildContext,
  base: ResolvedBase,
  images: readonly AssembledImage[],
  index: Blob | undefined,
  targets: readonly RepoTargets[],
  layer: Descriptor,
): Promise<void> {
  const first = targets[0]!.repo;
  // 1. Blobs, in every repository: base layers, the new layer, each platform's config.
  const blobs: Promise<void>[] = [];
  for (const { repo } of targets) {
    blobs.push(...baseBlobTransfers(pusher, base, repo));
    blobs.push(pusher.ensure(repo, layer, { kind: 'registry', repo: first }));
    for (const image of images) blobs.push(pusher.ensure(repo, image.config.descriptor, { kind: 'bytes', bytes: image.config.bytes }));
  }
  await settleAll(blobs);

  // 2. Per-platform manifests by digest when an index will name them.
  if (index) {
    await settleAll(
      targets.flatMap(({ repo }) =>
        images.map((image) =>
          putManifest(ctx, repo, image.manifest.descriptor.digest, image.manifest).catch((err: unknown) => {
            throw withContext(err, `pushing the ${image.platform.os}/${image.platform.architecture} manifest to ${repositoryName(repo)}`);
          }),
        ),
      ),
    );
  }

  // 3. Tags, last: one manifest PUT per tag. Once tagging starts it is not aborted (Ctrl-C, the
  //    function's deadline): the requests are small, and stopping between two would leave some
  //    tags on the new image and the others on the old one (or a PUT the registry may have
  //    applied after we stopped listening). A tag that fails after others were written is
  //    reported as exactly that.
  const top = index ?? images[0]!.manifest;
  if (ctx.signal?.aborted) throw new AbortedError('build aborted before any tag was written', { cause: ctx.signal.reason });
  const tagged: string[] = [];
  for (const { repo, tags, references } of targets) {
    for (const [i, tag] of tags.entries()) {
      const ref = String(references[i]);
      try {
        await ctx.beforeTag?.(ref);
        await putManifest(ctx, repo, tag, top, null);
      } catch (err) {
        const failed = withContext(err, `tagging ${repositoryName(repo)}:${tag}`);
        throw tagged.length === 0 ? failed : new TagsIncompleteError(top.descriptor.digest, tagged, failed);
      }
      tagged.push(ref);
      ctx.logger?.info('pushed', { image: `${repositoryName(repo)}:${tag}`, digest: top.descriptor.digest });
    }
  }
}

/** `signal` null: not abortable (a tag); omitted: the build's signal. */
async function putManifest(ctx: BuildContext, repo: Repository, reference: string, manifest: Blob, signal?: AbortSignal | null): Promise<void> {
  const digest = await ctx.registry.putManifest(repo, reference, manifest.bytes, manifest.descriptor.mediaType, signal === null ? undefined : (signal ?? ctx.signal));
  if (digest !== manifest.descriptor.digest) throw new DigestMismatchError(`manifest ${repositoryName(repo)}:${reference}`, manifest.descriptor.digest, digest);
}
