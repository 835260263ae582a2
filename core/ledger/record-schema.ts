/**
 * Ledger records defined once: a record is a table of fields, each with a kind; from that one
 * table come the record's TypeScript type, both ledgers' codecs (SQLite rows, Firestore
 * documents) and the SQLite columns. A field added to a table reaches both ledgers, the SQL
 * schema (with a migration for files written before it) and the type checker at once; no
 * second list of fields exists to forget (test/unit/ledger/record-schema.test.ts checks that).
 *
 * Kinds, and how each is kept:
 *
 * | kind   | in memory          | SQLite          | Firestore        |
 * |--------|--------------------|-----------------|------------------|
 * | `int`  | number (integer)   | INTEGER         | number           |
 * | `text` | string             | TEXT            | string           |
 * | `enum` | one of its values  | TEXT + CHECK    | string           |
 * | `ms`   | ms since the epoch | INTEGER         | Timestamp        |
 * | `iso`  | ISO-8601 string    | TEXT            | Timestamp        |
 * | `json` | its zod schema's   | TEXT (JSON)     | map              |
 */
import { z } from 'zod';

import { isoTime } from '../clock';
import { ShardlineError } from '../errors';

/** One field of a record. */
export type FieldSpec = (
  | { kind: 'int' | 'text' | 'ms' | 'iso' }
  | { kind: 'enum'; values: readonly [string, ...string[]] }
  | { kind: 'json'; schema: z.ZodType }
) & {
  /** May be null. */
  nullable?: boolean;
  /**
   * The value of a row or document written before the field existed (SQLite gets it as the
   * column's default in the migration; Firestore when the field is absent). Nullable fields
   * default to null.
   */
  absent?: unknown;
};

/** A record's fields by name. */
export type Fields = Readonly<Record<string, FieldSpec>>;

type Base<S extends FieldSpec, Times extends 'ms' | 'iso'> = S extends { kind: 'int' }
  ? number
  : S extends { kind: 'text' | 'iso' }
    ? string
    : S extends { kind: 'ms' }
      ? Times extends 'ms'
        ? number
        : string
      : S extends { kind: 'enum'; values: readonly (infer V)[] }
        ? V
        : S extends { kind: 'json'; schema: z.ZodType<infer J> }
          ? J
          : never;

/**
 * The record a field table describes. With `Times = 'iso'`, `ms` fields are ISO strings (what
 * callers see); with `'ms'`, numbers (what the state machine computes with).
 */
export type RecordOf<F extends Fields, Times extends 'ms' | 'iso' = 'ms'> = {
  -readonly [K in keyof F]: F[K] extends { nullable: true }
    ? Base<F[K], Times> | null
    : Base<F[K], Times>;
};

/** The store a codec is for. */
export type Store = 'sqlite' | 'firestore';

const int = z.number().int();
// Firestore hands back Timestamps; we write Dates (the client converts them). Matching the
// Timestamp by shape keeps this module free of a runtime import of the client library.
const timestamp = z.custom<{ toMillis(): number }>(
  (v) => typeof (v as { toMillis?: unknown } | null)?.toMillis === 'function',
  'a Firestore Timestamp',
);

function zodOf(spec: FieldSpec, store: Store): z.ZodType {
  let t: z.ZodType;
  switch (spec.kind) {
    case 'int':
      t = int;
      break;
    case 'text':
      t = z.string();
      break;
    case 'enum':
      t = z.enum(spec.values);
      break;
    case 'ms':
      t = store === 'sqlite' ? int : timestamp.transform((v) => v.toMillis());
      break;
    case 'iso':
      t = store === 'sqlite' ? z.string() : timestamp.transform((v) => isoTime(v.toMillis()));
      break;
    case 'json':
      t =
        store === 'sqlite'
          ? z
              .string()
              .transform((text, ctx) => {
                try {
                  return JSON.parse(text) as unknown;
                } catch {
                  ctx.addIssue({ code: 'custom', message: 'not JSON' });
                  return z.NEVER;
                }
              })
              .pipe(spec.schema)
          : spec.schema;
      break;
  }
  if (spec.nullable) t = t.nullable();
  const absent = spec.absent !== undefined ? spec.absent : spec.nullable ? null : undefined;
  return absent === undefined ? t : t.optional().transform((v) => (v === undefined ? absent : v));
}

/** Decodes and encodes one record table for one store. */
export interface Codec<T> {
  /** A stored row or document (untrusted: another version may have written it) to the record. */
  decode(stored: unknown, what: string): T;
  /** The record to what the store writes. */
  encode(record: T): Record<string, unknown>;
}

/** The codec of `fields` for `store`; `extra` fields (keys, bookkeeping) pass through. */
export function codecOf<F extends Fields>(fields: F, store: Store): Codec<RecordOf<F>> {
  const shape = Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, zodOf(s, store)]));
  const schema = z.object(shape);
  return {
    decode(stored, what) {
      const parsed = schema.safeParse(stored);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new ShardlineError(
          'LEDGER',
          `${what} is not a valid ledger record: ${issue ? `${issue.path.join('.')}: ${issue.message}` : ''}`,
        );
      }
      return parsed.data as RecordOf<F>;
    },
    encode(record) {
      const out: Record<string, unknown> = {};
      for (const [k, spec] of Object.entries(fields)) {
        const v = (record as Record<string, unknown>)[k];
        if (v === null || v === undefined) out[k] = null;
        else if (spec.kind === 'json') out[k] = store === 'sqlite' ? JSON.stringify(v) : v;
        else if (spec.kind === 'ms' && store === 'firestore') out[k] = new Date(v as number);
        else if (spec.kind === 'iso' && store === 'firestore') out[k] = new Date(v as string);
        else out[k] = v;
      }
      return out;
    },
  };
}

/** Field names, in table order. */
export function fieldNames<F extends Fields>(fields: F): Array<keyof F & string> {
  return Object.keys(fields);
}

function sqlLiteral(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return `'${v.replace(/'/g, "''")}'`;
  return `'${JSON.stringify(v).replace(/'/g, "''")}'`;
}

/** The SQLite column definition of a field (`name TYPE [NOT NULL] [CHECK]`). */
export function sqlColumn(name: string, spec: FieldSpec, withDefault = false): string {
  const type = spec.kind === 'int' || spec.kind === 'ms' ? 'INTEGER' : 'TEXT';
  const parts = [name, type];
  if (!spec.nullable) {
    parts.push('NOT NULL');
    // ALTER TABLE ADD COLUMN needs a default for a NOT NULL column.
    if (withDefault && spec.absent !== undefined) {
      const v = spec.kind === 'json' ? JSON.stringify(spec.absent) : spec.absent;
      parts.push(`DEFAULT ${sqlLiteral(v)}`);
    }
  }
  if (spec.kind === 'enum')
    parts.push(`CHECK (${name} IN (${spec.values.map((v) => sqlLiteral(v)).join(', ')}))`);
  return parts.join(' ');
}

/** The column definitions of a table, in table order. */
export function sqlColumns(fields: Fields): string[] {
  return Object.entries(fields).map(([name, spec]) => sqlColumn(name, spec));
}

/** `ms` fields as ISO strings: what callers of the ledger see. */
export function withIsoTimes<F extends Fields>(fields: F, record: RecordOf<F>): RecordOf<F, 'iso'> {
  const out: Record<string, unknown> = { ...record };
  for (const [k, spec] of Object.entries(fields)) {
    const v = out[k];
    if (spec.kind === 'ms' && typeof v === 'number') out[k] = isoTime(v);
  }
  return out as RecordOf<F, 'iso'>;
}
