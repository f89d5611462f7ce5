/**
 * artificer as a library: the same engine the CLI and the Cloud Function are thin shells over.
 *
 * ```ts
 * import { build, localSource, parseReference, RegistryClient, dockerConfigCredentials } from 'artificer';
 * const result = await build(
 *   {
 *     base: parseReference('alpine:3.20'),
 *     platforms: 'default',
 *     files: localSource([{ from: 'server', to: '' }]),
 *     layer: { mtime: 0 },
 *     config: { cmd: ['/server'], env: [['LOGLEVEL', '1']] },
 *     annotations: {},
 *     outputs: { registry: [parseReference('registry.example.com/team/app:1')] },
 *   },
 *   { registry: new RegistryClient({ credentials: dockerConfigCredentials() }) },
 * );
 * console.log(result.images[0]); // registry.example.com/team/app@sha256:…
 * ```
 */
export { build, DEFAULT_CONCURRENCY } from './build/build.ts';
export type { BuildContext, BuildRequest, BuildResult, BuiltImage, ConfigChanges, LayerPolicy, Outputs } from './build/request.ts';
export { DEFAULT_PLATFORM, parsePlatform } from './build/platform.ts';
export * from './errors.ts';
export type { EntrySource, EntryType, LayerEntry } from './layer/entry.ts';
export { createLayer, type Layer, type LayerDigests } from './layer/layer.ts';
export type { Logger, ProgressEvent } from './log.ts';
export { MediaTypes, type Descriptor, type Digest, type ImageConfig, type ImageIndex, type ImageManifest, type Platform } from './oci/types.ts';
export { parseReference, type Reference } from './reference/reference.ts';
export { RegistryClient, type RegistryClientOptions } from './registry/client.ts';
export { anonymous, chainCredentials, dockerConfigCredentials, staticCredentials } from './registry/credentials.ts';
export { DEFAULT_RETRY_POLICY, type RetryPolicy } from './registry/retry.ts';
export type { Credential, CredentialProvider, Registry, Repository } from './registry/types.ts';
export { bundleEntries } from './source/bundle.ts';
export { localSource, parseLocalSpec, type LocalSpec } from './source/local.ts';
export { parseSpec, parseSpecText, specToRequest, type BuildSpec } from './spec/index.ts';
