/**
 * Shared by the split tests that run with the native splitter: the addon, or a clear failure
 * when it was not built. `npm ci` builds it wherever a C++ compiler is installed (this
 * project's machines and CI); on a machine without one, SHARDLINE_NATIVE_SPLIT=off skips the
 * native half of these tests (the JavaScript half still runs) instead of failing them.
 */
import type { SplitAddon } from '../../../core/split/native';
import { loadSplitAddon, nativeSplitProblem } from '../../../core/split/native';
import type { SplitEngine } from '../../../core/split/native';

/** Whether the native half of the tests is turned off for this machine. */
export const NATIVE_OFF = process.env.SHARDLINE_NATIVE_SPLIT === 'off';

/** The engines to run a test with: both, unless the native one is turned off. */
export const ENGINES: readonly SplitEngine[] = NATIVE_OFF ? ['js'] : ['js', 'native'];

/** The addon; throws (failing the test) when it is missing and not turned off. */
export function requireAddon(): SplitAddon {
  const addon = loadSplitAddon();
  if (!addon) {
    throw new Error(
      `the native splitter is not built: ${nativeSplitProblem()}. Build it with \`npm run build:native\`, or set SHARDLINE_NATIVE_SPLIT=off on a machine without a C++ compiler.`,
    );
  }
  return addon;
}

/** A seeded PRNG's helpers: an integer in [0, n), and an element of a list. */
export function picker(r: () => number) {
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { int, pick };
}
