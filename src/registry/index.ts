export * from './types.ts';
export { RegistryClient, MANIFEST_ACCEPT, type RegistryClientOptions } from './client.ts';
export { anonymous, chainCredentials, dockerConfigCredentials, dockerConfigPath, staticCredentials } from './credentials.ts';
export { DEFAULT_RETRY_POLICY, retryPolicy, withRetry, isRetryable, type RetryPolicy, type RetryOptions } from './retry.ts';
export { parseWwwAuthenticate, type Challenge } from './challenge.ts';
export { endpointFor, isLoopbackHost, isForbiddenRealmHost, type Endpoint } from './endpoint.ts';
