/**
 * Flag parsing for `shardline`: declared flags, typed values, clear errors.
 *
 * Flags keep the seed's snake_case names (`--input_file`); every one is also accepted in
 * kebab-case (`--input-file`). `--flag value` and `--flag=value` both work; booleans take
 * `--flag` / `--no-flag`. A value may come from an environment variable named in the spec
 * (read from the `env` passed in, never from `process.env` here).
 */
import { ConfigError } from '../core/errors';

/** The kinds of values a flag can hold. */
export type FlagType = 'string' | 'int' | 'number' | 'boolean';

/** One flag of a command. */
export interface FlagSpec {
  /** Canonical name without dashes, snake_case (`input_file`). */
  name: string;
  type: FlagType;
  /** One line for `--help`. */
  description: string;
  /** Shown in help after the flag (`PATH`, `N`). */
  placeholder?: string;
  /** Used when neither the flag nor its env var is given. */
  default?: string | number | boolean;
  /** Must be given (by flag or env). */
  required?: boolean;
  /** Environment variable that supplies the value when the flag is absent. */
  env?: string;
  /** Allowed values (strings). */
  choices?: readonly string[];
  /** Inclusive bounds for numbers. */
  min?: number;
  max?: number;
  /** Shorter aliases, e.g. `['v']` for `-v`. */
  short?: string;
  /** Left out of `--help` (kept for compatibility). */
  hidden?: boolean;
}

/** Parsed flags with typed accessors. */
export class ParsedArgs {
  constructor(
    private readonly values: ReadonlyMap<string, string | number | boolean>,
    /** Names given explicitly on the command line or by env (not defaults). */
    readonly given: ReadonlySet<string>,
  ) {}

  private get(name: string): string | number | boolean | undefined {
    return this.values.get(name);
  }

  /** A string flag that has a value (required or defaulted). */
  str(name: string): string {
    const v = this.get(name);
    if (typeof v !== 'string') throw new ConfigError(`--${name} is required`);
    return v;
  }

  /** A string flag that may be absent. */
  optStr(name: string): string | undefined {
    const v = this.get(name);
    return typeof v === 'string' ? v : undefined;
  }

  /** A numeric flag that has a value. */
  num(name: string): number {
    const v = this.get(name);
    if (typeof v !== 'number') throw new ConfigError(`--${name} is required`);
    return v;
  }

  /** A numeric flag that may be absent. */
  optNum(name: string): number | undefined {
    const v = this.get(name);
    return typeof v === 'number' ? v : undefined;
  }

  /** A boolean flag (false when absent without a default). */
  bool(name: string): boolean {
    return this.get(name) === true;
  }
}

const kebab = (name: string): string => name.replace(/_/g, '-');

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

function convert(spec: FlagSpec, raw: string, source: string): string | number | boolean {
  const bad = (rule: string): never => {
    throw new ConfigError(`${source} ${rule}, got ${JSON.stringify(raw)}`);
  };
  switch (spec.type) {
    case 'boolean': {
      const v = raw.toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
      return bad('must be true or false');
    }
    case 'int':
    case 'number': {
      const n = raw.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(n)) return bad('must be a number');
      if (spec.type === 'int' && !Number.isInteger(n)) return bad('must be a whole number');
      if (spec.min !== undefined && n < spec.min) return bad(`must be at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) return bad(`must be at most ${spec.max}`);
      return n;
    }
    case 'string':
      if (spec.choices && !spec.choices.includes(raw))
        return bad(`must be one of ${spec.choices.join(', ')}`);
      return raw;
  }
}

/**
 * Parses `argv` (the words after the command name) against `specs`. Throws `ConfigError` for
 * an unknown flag (with a suggestion), a missing value, a bad value or a missing required flag.
 */
export function parseArgs(
  argv: readonly string[],
  specs: readonly FlagSpec[],
  env: Readonly<Record<string, string | undefined>>,
): ParsedArgs {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    byName.set(kebab(s.name), s);
    if (s.short) byName.set(s.short, s);
  }
  const values = new Map<string, string | number | boolean>();
  const given = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (!word.startsWith('-') || word === '-' || word === '--') {
      throw new ConfigError(
        `unexpected argument ${JSON.stringify(word)} (flags start with --; see --help)`,
      );
    }
    const body = word.replace(/^--?/, '');
    const eq = body.indexOf('=');
    let key = eq === -1 ? body : body.slice(0, eq);
    let negated = false;
    let spec = byName.get(key);
    if (!spec && key.startsWith('no-') && byName.get(key.slice(3))?.type === 'boolean') {
      negated = true;
      key = key.slice(3);
      spec = byName.get(key);
    }
    if (!spec) {
      const names = specs.filter((s) => !s.hidden).map((s) => s.name);
      const best = names
        .map((n) => ({ n, d: Math.min(levenshtein(key, n), levenshtein(key, kebab(n))) }))
        .sort((a, b) => a.d - b.d)[0];
      const hint = best && best.d <= 3 ? ` (did you mean --${best.n}?)` : '';
      throw new ConfigError(`unknown flag --${key}${hint}`);
    }
    let raw: string;
    if (eq !== -1) raw = body.slice(eq + 1);
    else if (spec.type === 'boolean') raw = negated ? 'false' : 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new ConfigError(
          `--${spec.name} needs a value${spec.placeholder ? ` (${spec.placeholder})` : ''}`,
        );
      }
      raw = next;
      i++;
    }
    if (negated && eq !== -1) throw new ConfigError(`--no-${spec.name} takes no value`);
    values.set(spec.name, convert(spec, raw, `--${spec.name}`));
    given.add(spec.name);
  }
  for (const spec of specs) {
    if (values.has(spec.name)) continue;
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') {
      values.set(spec.name, convert(spec, fromEnv, `environment variable ${spec.env}`));
      given.add(spec.name);
    } else if (spec.default !== undefined) {
      values.set(spec.name, spec.default);
    } else if (spec.required) {
      throw new ConfigError(`--${spec.name} is required${spec.env ? ` (or set ${spec.env})` : ''}`);
    }
  }
  return new ParsedArgs(values, given);
}

/** The options section of `--help`. */
export function formatFlags(specs: readonly FlagSpec[]): string {
  const rows = specs
    .filter((s) => !s.hidden)
    .map((s) => {
      const left = `  ${s.short ? `-${s.short}, ` : ''}--${s.name}${s.type === 'boolean' ? '' : ` ${s.placeholder ?? s.type.toUpperCase()}`}`;
      const notes: string[] = [];
      if (s.required) notes.push('required');
      if (s.default !== undefined && s.type !== 'boolean')
        notes.push(`default ${String(s.default)}`);
      if (s.choices) notes.push(`one of ${s.choices.join('|')}`);
      if (s.env) notes.push(`env ${s.env}`);
      return { left, right: `${s.description}${notes.length ? ` (${notes.join('; ')})` : ''}` };
    });
  const width = Math.min(34, Math.max(...rows.map((r) => r.left.length)) + 2);
  return rows
    .map((r) =>
      r.left.length + 2 > width
        ? `${r.left}\n${' '.repeat(width)}${r.right}`
        : `${r.left.padEnd(width)}${r.right}`,
    )
    .join('\n');
}
