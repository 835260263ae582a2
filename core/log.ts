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
/** Nesting kept in a logged value; deeper objects are replaced by a placeholder. */
export const MAX_LOG_DEPTH = 4;
const SECRET_KEY =
  /(pass(word)?|secret|token|credential|private[_-]?key|authorization|api[_-]?key|access[_-]?key|cookie)/i;
const REDACTED = '[redacted]';
/** Model-token counts (`tokens`, `prompt_tokens`): numbers under these keys are not secrets. */
const COUNT_KEY = /tokens/i;

/**
 * Credentials that show up inside strings (an error message quoting a request, a URL, a
 * config line): replaced where they stand. Every pattern is linear (no nested quantifiers).
 */
const SECRET_IN_TEXT: ReadonlyArray<[RegExp, string]> = [
  // PEM private keys, complete or cut.
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)/g, REDACTED],
  // Authorization header values.
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}/gi, `$1 ${REDACTED}`],
  // Passwords in URLs: scheme://user:password@host.
  [/(\b[a-z][a-z0-9+.-]{0,30}:\/\/[^\s/:@]{0,256}):[^\s/@]{1,256}@/gi, `$1:${REDACTED}@`],
  // key=value pairs (query strings, env lines) whose key looks secret.
  [
    /\b([a-z0-9_-]{0,40}?(?:pass(?:word)?|passwd|secret|token|api[_-]?key|access[_-]?key|credential|signature)[a-z0-9_-]{0,40})=[^\s&"',;]+/gi,
    `$1=${REDACTED}`,
  ],
  // "key": "value" pairs in quoted JSON whose key looks secret.
  [
    /("[^"\n]{0,80}?(?:pass(?:word)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|authorization)[^"\n]{0,80}?"\s*:\s*)"(?:[^"\\\n]|\\.){0,4096}"/gi,
    `$1"${REDACTED}"`,
  ],
  // Well-known token shapes: OpenAI-style, Google OAuth and API keys, AWS key ids, GitHub, Slack.
  [
    /\b(?:sk-[A-Za-z0-9_-]{16,}|ya29\.[A-Za-z0-9_-]{10,}|AIza[A-Za-z0-9_-]{30,}|AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})/g,
    REDACTED,
  ],
];

/** `text` with credentials found by pattern replaced (see `SECRET_IN_TEXT`). */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_IN_TEXT) out = out.replace(pattern, replacement);
  return out;
}

function redactString(value: string): string {
  // Scrub a little more than is kept, so a secret that straddles the cut is still found whole.
  const head = scrubSecrets(value.slice(0, MAX_LOG_STRING + 200));
  return value.length > MAX_LOG_STRING || head.length > MAX_LOG_STRING
    ? `${head.slice(0, MAX_LOG_STRING)}…(${value.length} chars)`
    : head;
}

/**
 * Makes a value safe to log: values under keys that look secret are hidden, credentials inside
 * strings are replaced, long strings cut to `MAX_LOG_STRING`, arrays to 20 items, nesting to
 * `MAX_LOG_DEPTH`; errors are flattened to name, message, code and (redacted) cause.
 */
export function redact(value: unknown, key = '', depth = 0): unknown {
  if (key && SECRET_KEY.test(key) && !(typeof value === 'number' && COUNT_KEY.test(key)))
    return REDACTED;
  if (typeof value === 'string') return redactString(value);
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return value;
  // Deeper objects (and cause chains, which may loop) are not walked, and never passed on raw.
  if (depth > MAX_LOG_DEPTH) return value instanceof Error ? `[${value.name}]` : '[…]';
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return {
      name: value.name,
      message: redact(value.message),
      ...(code === undefined ? {} : { code: redact(code, '', depth + 1) }),
      ...(value.cause === undefined ? {} : { cause: redact(toError(value.cause), '', depth + 1) }),
    };
  }
  if (Array.isArray(value)) {
    const head = value.slice(0, 20).map((v) => redact(v, '', depth + 1));
    return value.length > 20 ? [...head, `…(${value.length} items)`] : head;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redact(v, k, depth + 1);
  return out;
}

/** A field value on a text line: as it is, unless it could break the line (then quoted). */
function textValue(v: unknown): string {
  if (typeof v === 'string' && !/[\u0000-\u001f\u007f\u2028\u2029]/.test(v)) return v;
  return JSON.stringify(v) ?? String(v);
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
        .map(([k, v]) => `${k}=${textValue(v)}`)
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
