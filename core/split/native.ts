/**
 * The native splitter (native/split, built from source by `npm ci` when a C++ compiler is
 * there): a JSON line validator that gives the verdict of json-check.ts + the UTF-8 check of
 * classify.ts on every line (SIMD, ~3 GB/s a core on ARC data against ~0.5-0.7 GB/s for the
 * JavaScript checker), CRC32C with the CPU's crc32 instruction, and `copy_file_range` copies.
 *
 * It is optional: when it is missing (no compiler at install, `--ignore-scripts`, another
 * platform) or turned off (`SHARDLINE_SPLIT_ENGINE=js`), the JavaScript checker does the
 * work, with the same results. The JavaScript checker is also the one that names what is
 * wrong with a rejected line: the native validator only says which lines to reject.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { ShardlineError, toError } from '../errors';

/** The arguments of `scanBlock`. */
export type BlockScan = [
  buf: Uint8Array,
  from: number,
  to: number,
  crcFrom: number,
  maxLineBytes: number,
  out: Float64Array,
];

/** The functions of the compiled addon (native/split/src/addon.cc). */
export interface SplitAddon {
  /**
   * Classifies the lines of `buf[from, to)` (a line is a run of bytes up to `\n`; a final one
   * without `\n` counts) into `out` (layout: BLOCK_*). A line longer than `maxLineBytes` or
   * not a JSON object is recorded as an exception for the caller to check again; when `out`
   * has no room for one more, the scan stops before that line (`out[BLOCK_STOP]`). With
   * `crcFrom >= 0`, `out[BLOCK_CRC]` receives the CRC32C of `buf[crcFrom, to)`.
   */
  scanBlock(...args: BlockScan): void;
  /** `scanBlock` on the libuv thread pool; `buf` and `out` must not change until it resolves. */
  scanBlockAsync(...args: BlockScan): Promise<void>;
  /** One line's verdict (LINE_*), with the named compiled variant (default: the fastest). */
  checkLine(buf: Uint8Array, start: number, end: number, variant?: string): number;
  /** CRC32C of the bytes behind `crc` followed by `buf` (`'portable'`: the table version). */
  crc32c(buf: Uint8Array, crc?: number, variant?: 'portable'): number;
  /**
   * Copies `length` bytes from `fdIn` at `offsetIn` to `fdOut` at `offsetOut` in the kernel
   * (`copy_file_range`, or pread/pwrite where that is not possible), off the main thread.
   * Rejects with code `ESHORT` when the input ends early.
   */
  copyFileRange(
    fdIn: number,
    offsetIn: number,
    fdOut: number,
    offsetOut: number,
    length: number,
  ): Promise<void>;
  /** The validator variants this CPU can run, fastest first (`avx2`, `sse2`, `portable`). */
  readonly variants: readonly string[];
  /** The variant in use. */
  readonly validator: string;
  /** Whether CRC32C uses the crc32 instruction. */
  readonly crc32cHardware: boolean;
}

/** `out` of scanBlock: lines scanned. */
export const BLOCK_LINES = 0;
/** `out` of scanBlock: tasks among them. */
export const BLOCK_TASKS = 1;
/** `out` of scanBlock: whitespace-only lines among them. */
export const BLOCK_BLANK = 2;
/** `out` of scanBlock: lines whose last byte is `\r`. */
export const BLOCK_CR_LINES = 3;
/** `out` of scanBlock: where the scan stopped (`to` when it finished). */
export const BLOCK_STOP = 4;
/** `out` of scanBlock: exceptions recorded, as (line index in the call, start, end) from BLOCK_HEADER. */
export const BLOCK_EXCEPTIONS = 5;
/** `out` of scanBlock: the CRC32C asked for. */
export const BLOCK_CRC = 6;
/** `out` of scanBlock: where the exception entries begin. */
export const BLOCK_HEADER = 8;

/** `checkLine`: a task. */
export const LINE_TASK = 0;
/** `checkLine`: a whitespace-only line. */
export const LINE_BLANK = 1;
/** `checkLine`: a line to reject. */
export const LINE_REJECT = 2;

/** Which line checker a split uses: the native one when it loads (`auto`), or one of them. */
export type SplitEngine = 'auto' | 'native' | 'js';

/** Where the build puts the addon, relative to the repository root. */
const ADDON_FILE = path.join('native', 'split', 'build', 'Release', 'shardline_split.node');

let loaded: { addon: SplitAddon | null; problem: string } | undefined;

/** The addon's path: this file is core/split/native.ts in a checkout, dist/core/split/native.js when built. */
function addonPath(): string | null {
  for (const up of ['../..', '../../..']) {
    const file = path.resolve(__dirname, up, ADDON_FILE);
    if (existsSync(file)) return file;
  }
  return null;
}

function load(): { addon: SplitAddon | null; problem: string } {
  const file = addonPath();
  if (!file) {
    return {
      addon: null,
      problem: `${ADDON_FILE} was not built (npm ci builds it when a C++ compiler is installed; or run \`npm run build:native\`)`,
    };
  }
  try {
    const module = { exports: {} as unknown };
    process.dlopen(module, file);
    return { addon: module.exports as SplitAddon, problem: '' };
  } catch (e: unknown) {
    return { addon: null, problem: `${file} could not be loaded: ${toError(e).message}` };
  }
}

/** The native splitter, or null when it is not available (see `nativeSplitProblem`). */
export function loadSplitAddon(): SplitAddon | null {
  loaded ??= load();
  return loaded.addon;
}

/** Why the native splitter is not available ('' when it is). */
export function nativeSplitProblem(): string {
  loaded ??= load();
  return loaded.problem;
}

/**
 * The addon a split with `engine` uses: null for `js`, and for `auto` when it is not
 * available. `native` without the addon fails, naming why.
 */
export function addonFor(engine: SplitEngine): SplitAddon | null {
  if (engine === 'js') return null;
  const addon = loadSplitAddon();
  if (!addon && engine === 'native') {
    throw new ShardlineError(
      'INVALID_ARGUMENT',
      `SHARDLINE_SPLIT_ENGINE is "native" but the native splitter is not available: ${nativeSplitProblem()}`,
    );
  }
  return addon;
}
