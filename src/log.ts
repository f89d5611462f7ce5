/**
 * The library is quiet: it reports through an injected {@link Logger}. The CLI prints to
 * stderr (only with -v), the Cloud Function writes JSON lines with a `severity` field.
 * Fields must never contain credentials; callers pass redacted URLs.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** Byte progress of one blob upload, for progress bars. `total` is unknown for streamed layers. */
export interface ProgressEvent {
  readonly kind: 'upload' | 'copy' | 'skip' | 'mount';
  readonly digest?: string;
  readonly bytes: number;
  readonly total?: number;
  readonly done: boolean;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
};
