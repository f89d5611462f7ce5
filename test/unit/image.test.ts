// assembleImage and assembleIndex: the new image's manifest, config and index take the media
// type family of their base (Docker stays Docker, OCI stays OCI), and annotations exist only in
// the OCI family, where the base's name and digest are recorded.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BaseImage, ResolvedBase } from '../../src/build/base.ts';
import { assembleImage, assembleIndex, BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION } from '../../src/build/image.ts';
import { MediaTypes, type Descriptor, type Digest, type Family, type ImageConfig, type ImageIndex, type ImageManifest, type Platform } from '../../src/oci/types.ts';
import { parseReference } from '../../src/reference/reference.ts';

const d = (c: string): Digest => `sha256:${c.repeat(64)}`;
const amd64: Platform = { os: 'linux', architecture: 'amd64' };
const arm64: Platform = { os: 'linux', architecture: 'arm64' };
const reference = parseReference('registry.example/base/app:1');

/** A base image of `family` whose one layer has the media type `layerType`. */
function baseImage(family: Family, platform: Platform, layerType: string): BaseImage {
  const config: ImageConfig = { ...platform, rootfs: { type: 'layers', diff_ids: [d('1')] }, history: [{ created_by: 'ADD rootfs' }] } as ImageConfig;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: family === 'oci' ? MediaTypes.ociManifest : MediaTypes.dockerManifest,
    config: { mediaType: family === 'oci' ? MediaTypes.ociConfig : MediaTypes.dockerConfig, digest: d('2'), size: 10 },
    layers: [{ mediaType: layerType, digest: d('3'), size: 100 }],
  };
  return { platform, manifest, manifestDigest: platform === amd64 ? d('4') : d('5'), config };
}

function resolved(family: Family, images: BaseImage[]): ResolvedBase {
  return { reference, repo: { registry: reference.registry, repository: reference.repository }, family, images, multiPlatform: images.length > 1 };
}

const newLayer = (family: Family): { descriptor: Descriptor; diffId: Digest } => ({
  descriptor: { mediaType: family === 'oci' ? MediaTypes.ociLayerGzip : MediaTypes.dockerLayerGzip, digest: d('6'), size: 50 },
  diffId: d('7'),
});
const req = { config: {}, layer: { mtime: 0 }, annotations: { 'org.example.note': 'hi' } };
const json = <T>(b: { bytes: Buffer }): T => JSON.parse(b.bytes.toString('utf8')) as T;

test('an OCI base: OCI manifest and config, the base named and pinned by annotations, the request annotations added', () => {
  const image = baseImage('oci', amd64, MediaTypes.ociLayerGzip);
  const out = assembleImage(resolved('oci', [image]), image, req, newLayer('oci'));
  const manifest = json<ImageManifest>(out.manifest);
  assert.equal(manifest.mediaType, MediaTypes.ociManifest);
  assert.equal(out.manifest.descriptor.mediaType, MediaTypes.ociManifest);
  assert.equal(manifest.config.mediaType, MediaTypes.ociConfig);
  assert.deepEqual(manifest.annotations, {
    [BASE_NAME_ANNOTATION]: 'registry.example/base/app:1',
    [BASE_DIGEST_ANNOTATION]: d('4'),
    'org.example.note': 'hi',
  });
});

test('a Docker base: Docker manifest and config, and no annotations at all (Docker v2 manifests have none)', () => {
  const image = baseImage('docker', amd64, MediaTypes.dockerLayerGzip);
  const out = assembleImage(resolved('docker', [image]), image, req, newLayer('docker'));
  const manifest = json<ImageManifest>(out.manifest);
  assert.equal(manifest.mediaType, MediaTypes.dockerManifest);
  assert.equal(out.manifest.descriptor.mediaType, MediaTypes.dockerManifest);
  assert.equal(manifest.config.mediaType, MediaTypes.dockerConfig);
  assert.equal('annotations' in manifest, false, JSON.stringify(manifest));
});

test("base layers are named in the new image's family: the same bytes under the other family's media type", () => {
  // An OCI image of Docker layers (what some tools push), and the OCI twin of a Docker image.
  const dockerLayers = baseImage('oci', amd64, MediaTypes.dockerLayerGzip);
  const oci = json<ImageManifest>(assembleImage(resolved('oci', [dockerLayers]), dockerLayers, req, newLayer('docker')).manifest);
  assert.deepEqual(oci.layers.map((l) => l.mediaType), [MediaTypes.ociLayerGzip, MediaTypes.ociLayerGzip]);
  assert.deepEqual(oci.layers.map((l) => l.digest), [d('3'), d('6')]);
  const ociLayers = baseImage('docker', amd64, MediaTypes.ociLayerGzip);
  const docker = json<ImageManifest>(assembleImage(resolved('docker', [ociLayers]), ociLayers, req, newLayer('oci')).manifest);
  assert.deepEqual(docker.layers.map((l) => l.mediaType), [MediaTypes.dockerLayerGzip, MediaTypes.dockerLayerGzip]);
});

test('the index follows the family too: an OCI index with annotations, a Docker manifest list without', () => {
  for (const [family, indexType, manifestType] of [
    ['oci', MediaTypes.ociIndex, MediaTypes.ociManifest],
    ['docker', MediaTypes.dockerManifestList, MediaTypes.dockerManifest],
  ] as const) {
    const layerType = family === 'oci' ? MediaTypes.ociLayerGzip : MediaTypes.dockerLayerGzip;
    const bases = [baseImage(family, amd64, layerType), baseImage(family, arm64, layerType)];
    const base = resolved(family, bases);
    const images = bases.map((image) => assembleImage(base, image, req, newLayer(family)));
    const blob = assembleIndex(family, images, req.annotations);
    const index = json<ImageIndex>(blob);
    assert.equal(index.mediaType, indexType, family);
    assert.equal(blob.descriptor.mediaType, indexType, family);
    assert.deepEqual(index.manifests.map((m) => [m.mediaType, m.platform?.architecture]), [[manifestType, 'amd64'], [manifestType, 'arm64']], family);
    assert.deepEqual(index.manifests.map((m) => m.digest), images.map((i) => i.manifest.descriptor.digest), family);
    if (family === 'oci') assert.deepEqual(index.annotations, req.annotations);
    else assert.equal('annotations' in index, false, JSON.stringify(index));
  }
});

test("an annotation the user gives replaces the base's that artificer computes (a mirror's base named as the canonical image)", () => {
  const image = baseImage('oci', amd64, MediaTypes.ociLayerGzip);
  const named = { ...req, annotations: { [BASE_NAME_ANNOTATION]: 'docker.io/library/alpine:3.20' } };
  const manifest = json<ImageManifest>(assembleImage(resolved('oci', [image]), image, named, newLayer('oci')).manifest);
  assert.equal(manifest.annotations?.[BASE_NAME_ANNOTATION], 'docker.io/library/alpine:3.20');
  assert.equal(manifest.annotations?.[BASE_DIGEST_ANNOTATION], d('4'), 'the digest artificer computed stays');
});
