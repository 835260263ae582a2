/**
 * Structured logs. In the cloud one JSON object per line, in the shape Cloud Logging reads
 * (`severity`, `message`, `time`, plus glossary-named fields: `dataset_id`, `shard_id`,
 * `worker_id`, `epoch`, `event_id`). On a terminal a compact text line.
 *
 * Logs must never carry credentials or whole task payloads: keys that look like secrets are
 * replaced by `[redacted]`, and long strings are cut (see `redact`).
 */
import type { Clock } from './clock';
import { toError } from './errors';

/** Cloud Logging severities, in increasing order. */
export type Severity = 'DEBUG' | 'INFO' | 'NOTICE' | 'WARNING' | 'ERROR';

const RANK: Record<Severity, number> = { DEBUG: 0, INFO: 1, NOTICE: 2, WARNING: 3, ERROR: 4 };

/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** The logger every module receives from its composition root. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  notice(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

/** Options of `createLogger`. */
export interface LoggerOptions {
  /** `json` for Cloud Logging and pipes, `text` for a person at a terminal. */
  format: 'json' | 'text';
  /** Lines below this severity are dropped. Default INFO. */
  minSeverity?: Severity;
  /** Where each finished line goes. Default: process.stderr. */
  sink?: (line: string) => void;
  /** Timestamps; default the system clock. */
  clock?: Clock;
  /** Fields on every line. */
  fields?: LogFields;
}

/** Longest string value kept in a log line; longer ones are cut (task payloads stay out). */
export const MAX_LOG_STRING = 300;
const SECRET_KEY =
  /(pass(word)?|secret|token|credential|private[_-]?key|authorization|api[_-]?key)/i;

/** Makes a value safe to log: secrets by key name are hidden, long strings cut, errors flattened. */
export function redact(value: unknown, key = '', depth = 0): unknown {
  if (key && SECRET_KEY.test(key)) return '[redacted]';
  if (typeof value === 'string') {
    return value.length > MAX_LOG_STRING
      ? `${value.slice(0, MAX_LOG_STRING)}…(${value.length} chars)`
      : value;
  }
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return {
      name: value.name,
      message: redact(value.message),
      ...(code === undefined ? {} : { code }),
      ...(value.cause === undefined ? {} : { cause: redact(toError(value.cause), '', depth + 1) }),
    };
  }
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    const head = value.slice(0, 20).map((v) => redact(v, '', depth + 1));
    return value.length > 20 ? [...head, `…(${value.length} items)`] : head;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redact(v, k, depth + 1);
  return out;
}

/** Creates a logger; see `LoggerOptions`. */
export function createLogger(options: LoggerOptions): Logger {
  const min = RANK[options.minSeverity ?? 'INFO'];
  const sink = options.sink ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const now = options.clock ? () => options.clock!.nowMs() : () => Date.now();
  const make = (base: LogFields): Logger => {
    const emit = (severity: Severity, message: string, fields: LogFields = {}): void => {
      if (RANK[severity] < min) return;
      const all = redact({ ...base, ...fields }) as LogFields;
      const time = new Date(now()).toISOString();
      if (options.format === 'json') {
        sink(JSON.stringify({ severity, message, time, ...all }));
        return;
      }
      const extras = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      sink(`${time.slice(11, 19)} ${severity.padEnd(7)} ${message}${extras ? `  ${extras}` : ''}`);
    };
    return {
      debug: (m, f) => emit('DEBUG', m, f),
      info: (m, f) => emit('INFO', m, f),
      notice: (m, f) => emit('NOTICE', m, f),
      warn: (m, f) => emit('WARNING', m, f),
      error: (m, f) => emit('ERROR', m, f),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.fields ?? {});
}

/** A logger that drops everything; for tests and library callers that want silence. */
export const silentLogger: Logger = createLogger({ format: 'json', sink: () => undefined });
