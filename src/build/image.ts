import { sha256 } from '../oci/digest.ts';
import { FamilyTypes, MediaTypes, type Descriptor, type Digest, type Family, type ImageIndex, type ImageManifest, type Platform } from '../oci/types.ts';
import type { BaseImage, ResolvedBase } from './base.ts';
import { newImageConfig } from './config.ts';
import type { BuildRequest } from './request.ts';

/** A blob held in memory (configs and manifests are small), with its descriptor. */
export interface Blob {
  readonly bytes: Buffer;
  readonly descriptor: Descriptor;
}

/** One platform's finished image: everything but the layers' bytes. */
export interface AssembledImage {
  readonly platform: Platform;
  readonly base: BaseImage;
  readonly config: Blob;
  readonly manifest: Blob;
  /** Every layer, base first, then the new one. */
  readonly layers: readonly Descriptor[];
}

function blob(value: unknown, mediaType: string, extra: Partial<Descriptor> = {}): Blob {
  const bytes = Buffer.from(JSON.stringify(value), 'utf8');
  return { bytes, descriptor: { mediaType, digest: sha256(bytes), size: bytes.length, ...extra } };
}

const LAYER_TYPES: Record<Family, Record<string, string>> = {
  oci: {
    [MediaTypes.dockerLayerGzip]: MediaTypes.ociLayerGzip,
    [MediaTypes.dockerForeignLayerGzip]: MediaTypes.ociLayerNondistributableGzip,
  },
  docker: {
    [MediaTypes.ociLayerGzip]: MediaTypes.dockerLayerGzip,
    [MediaTypes.ociLayerNondistributableGzip]: MediaTypes.dockerForeignLayerGzip,
  },
};

/**
 * A layer descriptor with the media type of `family`: the bytes are the same in both families,
 * only the name differs (what skopeo does when it copies a Docker image into an OCI layout).
 */
function inFamily(family: Family, d: Descriptor): Descriptor {
  const mediaType = LAYER_TYPES[family][d.mediaType];
  return mediaType ? { ...d, mediaType } : d;
}

export const BASE_NAME_ANNOTATION = 'org.opencontainers.image.base.name';
export const BASE_DIGEST_ANNOTATION = 'org.opencontainers.image.base.digest';

/**
 * Config and manifest of the new image for one platform. Pure: the same base, request and layer
 * give the same bytes, hence the same digest.
 *
 * Annotations exist only in the OCI family; Docker v2 manifests have no such field, so they are
 * left out there (the caller warns).
 */
export function assembleImage(
  base: ResolvedBase,
  image: BaseImage,
  req: Pick<BuildRequest, 'config' | 'layer' | 'annotations'>,
  layer: { readonly descriptor: Descriptor; readonly diffId: Digest },
): AssembledImage {
  const types = FamilyTypes[base.family];
  const config = blob(newImageConfig(image.config, image.platform, req.config, req.layer, layer.diffId), types.config);
  const layers = [...(image.manifest?.layers ?? []).map((d) => inFamily(base.family, d)), inFamily(base.family, layer.descriptor)];
  const annotations: Record<string, string> = {};
  if (base.family === 'oci') {
    if (base.reference && image.manifestDigest) {
      annotations[BASE_NAME_ANNOTATION] = String(base.reference);
      annotations[BASE_DIGEST_ANNOTATION] = image.manifestDigest;
    }
    Object.assign(annotations, req.annotations);
  }
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: config.descriptor,
    layers,
    ...(Object.keys(annotations).length ? { annotations } : {}),
  };
  return { platform: image.platform, base: image, config, layers, manifest: blob(manifest, types.manifest, { platform: image.platform }) };
}

/** The index (OCI) or manifest list (Docker) over several platforms' manifests. */
export function assembleIndex(family: Family, images: readonly AssembledImage[], annotations: Readonly<Record<string, string>>): Blob {
  const types = FamilyTypes[family];
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: types.index,
    manifests: images.map((i) => i.manifest.descriptor),
    ...(family === 'oci' && Object.keys(annotations).length ? { annotations: { ...annotations } } : {}),
  };
  return blob(index, types.index);
}
