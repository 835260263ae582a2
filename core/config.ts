/**
 * Reading settings from the environment (once per process, in composition roots only) and
 * from other text a user sets (an upload's custom metadata). A bad value fails with a message
 * naming the variable, the rule and the value.
 */
import { ConfigError } from './errors';

/** The environment, as a plain record (process.env in composition roots, a literal in tests). */
export type Env = Readonly<Record<string, string | undefined>>;

/** A string variable, or the default. */
export function envString(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v === '' ? fallback : v;
}

/** The bounds of a number setting. */
export interface NumberRule {
  min: number;
  max: number;
  /** Whole numbers only. Default false. */
  integer?: boolean;
}

/**
 * Parses a number setting given as text (an environment variable, an object's custom
 * metadata) within `rule`; a bad value fails with `ConfigError` naming `what`, the rule and
 * the value.
 */
export function parseNumberSetting(raw: string, what: string, rule: NumberRule): number {
  const v = Number(raw);
  const integer = rule.integer ?? false;
  if (
    raw.trim() === '' ||
    !Number.isFinite(v) ||
    (integer && !Number.isInteger(v)) ||
    v < rule.min ||
    v > rule.max
  ) {
    throw new ConfigError(
      `${what} must be ${integer ? 'a whole number' : 'a number'} from ${rule.min} to ${rule.max}, got ${JSON.stringify(raw)}`,
    );
  }
  return v;
}

/** A number variable within [min, max], or the default. */
export function envNumber(
  env: Env,
  name: string,
  fallback: number,
  min: number,
  max: number,
  integer = false,
): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  return parseNumberSetting(raw, `environment variable ${name}`, { min, max, integer });
}

/** A prefix variable, normalised to end with exactly one `/` (and not start with one). */
export function envPrefix(env: Env, name: string, fallback: string): string {
  const v = envString(env, name, fallback).replace(/^\/+/, '').replace(/\/+$/, '');
  if (v.split('/').some((s) => s === '..' || s === '.' || s === '')) {
    throw new ConfigError(
      `environment variable ${name} must be a plain prefix like "incoming/", got ${JSON.stringify(env[name])}`,
    );
  }
  return `${v}/`;
}
