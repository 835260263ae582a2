/**
 * Reading settings from the environment, once per process, in composition roots only. A bad
 * value fails with a message naming the variable, the rule and the value.
 */
import { ConfigError } from './errors';

/** The environment, as a plain record (process.env in composition roots, a literal in tests). */
export type Env = Readonly<Record<string, string | undefined>>;

/** A string variable, or the default. */
export function envString(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v === '' ? fallback : v;
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
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
    throw new ConfigError(
      `environment variable ${name} must be ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return v;
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
