/**
 * The Cloud Functions entry point (package.json `main`): two CloudEvent functions,
 * `buildOnUpload` (Eventarc, `google.cloud.storage.object.v1.finalized`) and `rebuildOnMessage`
 * (Eventarc, `google.cloud.pubsub.topic.v1.messagePublished`).
 *
 * Importing this module only registers the two handlers with the functions framework; the
 * configuration is read, and clients are created, when the first event arrives.
 *
 *     npx functions-framework --target=buildOnUpload --signature-type=cloudevent
 */
import * as functions from '@google-cloud/functions-framework';
import type { Storage } from '@google-cloud/storage';
import { UsageError } from '../errors.ts';
import { parseFunctionConfig } from './config.ts';
import { parseRebuildMessage, parseStorageEvent, type CloudEventLike } from './events.ts';
import { GoogleCredentialProvider } from './google-credentials.ts';
import { onObjectFinalized, onRebuildMessage, type HandlerDeps } from './handler.ts';
import { jsonLogger } from './logger.ts';
import { RestPublisher } from './pubsub.ts';
import { createStorage } from './storage.ts';

let shared: { storage: Storage; credentials: GoogleCredentialProvider; publisher: RestPublisher } | undefined;

function deps(event: CloudEventLike): HandlerDeps {
  const config = parseFunctionConfig(process.env);
  // One Storage client and one token cache per instance; created on first use.
  shared ??= {
    storage: createStorage(),
    credentials: new GoogleCredentialProvider({ extraRegistries: config.googleRegistries }),
    publisher: new RestPublisher(),
  };
  const logger = jsonLogger(config.logLevel, { eventId: event.id, eventType: event.type });
  return { ...shared, config, logger };
}

/** Builds the image a spec object describes when it is uploaded. */
export async function buildOnUpload(event: CloudEventLike): Promise<void> {
  const d = deps(event);
  let parsed;
  try {
    parsed = parseStorageEvent(event);
  } catch (err) {
    // A malformed event cannot succeed on retry: log it and acknowledge.
    if (err instanceof UsageError) return void d.logger.error(err.message);
    throw err;
  }
  await onObjectFinalized(d, parsed);
}

/** Rebuilds a spec (`{"bucket","object"}`) or every spec on an updated base image. */
export async function rebuildOnMessage(event: CloudEventLike): Promise<void> {
  await onRebuildMessage(deps(event), parseRebuildMessage(event));
}

functions.cloudEvent('buildOnUpload', buildOnUpload);
functions.cloudEvent('rebuildOnMessage', rebuildOnMessage);
