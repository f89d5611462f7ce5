/**
 * JSON lines on stdout with a `severity` field: Cloud Logging parses them into structured
 * entries (https://cloud.google.com/functions/docs/monitoring/logging#writing_structured_logs).
 * Every string field passes through {@link redactSecrets}, so a token that slipped into a
 * message never reaches the log.
 */
import type { Logger } from '../log.ts';
import type { LogLevel } from './config.ts';

export type Severity = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR';

/** Removes bearer tokens, Google access tokens and URL userinfo from a string. */
export function redactSecrets(s: string): string {
  return s
    .replace(/ya29\.[\w.~+/-]+=*/g, 'REDACTED')
    .replace(/\b(Bearer|Basic)\s+[\w.~+/-]+=*/gi, '$1 REDACTED')
    .replace(/\/\/[^/@\s:]+:[^/@\s]+@/g, '//REDACTED@')
    .replace(/([?&](?:access_token|token|password|sig|signature|verify|x-goog-signature|x-goog-credential|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s]+/gi, '$1REDACTED');
}

/** Every string in `value` redacted; below a few levels of nesting, the rest as redacted JSON text. */
function clean(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactSecrets(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 4) {
    try {
      return redactSecrets(JSON.stringify(value));
    } catch {
      return '[unserializable]';
    }
  }
  if (Array.isArray(value)) return value.map((v) => clean(v, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, clean(v, depth + 1)]));
}

export interface JsonLogger extends Logger {
  log(severity: Severity, message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const RANK: Record<Severity, number> = { DEBUG: 0, INFO: 1, WARNING: 2, ERROR: 3 };
const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warning: 2 };

export function jsonLogger(
  level: LogLevel = 'info',
  base: Record<string, unknown> = {},
  write: (line: string) => void = (line) => void process.stdout.write(line),
): JsonLogger {
  const log = (severity: Severity, message: string, fields: Record<string, unknown> = {}): void => {
    if (RANK[severity] < LEVEL_RANK[level]) return;
    const entry = clean({ ...base, ...fields, severity, message }) as Record<string, unknown>;
    write(JSON.stringify(entry) + '\n');
  };
  return {
    log,
    debug: (m, f) => log('DEBUG', m, f),
    info: (m, f) => log('INFO', m, f),
    warn: (m, f) => log('WARNING', m, f),
    error: (m, f) => log('ERROR', m, f),
  };
}
