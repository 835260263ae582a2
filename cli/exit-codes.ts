/**
 * Exit codes of the `shardline` command, documented in every command's `--help`.
 * Scripts can rely on them: they are part of the public interface.
 */
export const EXIT = {
  /** Success. */
  OK: 0,
  /** An unexpected failure (a bug, or storage/ledger trouble after retries). */
  FAILURE: 1,
  /** Bad usage: unknown flag, bad value, missing argument. */
  USAGE: 2,
  /** The input is invalid (no valid task, `--strict` met a bad line, unreadable gzip). */
  INVALID_INPUT: 3,
  /** The target exists and differs (a different or live dataset), or another create is running. */
  CONFLICT: 4,
  /** `claim`: no shard is available right now. */
  NOTHING_AVAILABLE: 5,
  /** The claim is not yours (another holder or a newer epoch); retry with `--force` if you mean it. */
  NOT_HOLDER: 6,
  /** Something named does not exist (dataset, shard, file). */
  NOT_FOUND: 7,
  /**
   * `work` stopped with shards failed for good (by this worker, or left in its datasets): a
   * batch job must see it. Restart policies must not retry on it (nothing changes by itself).
   */
  FAILED_SHARDS: 8,
  /**
   * `verify` found problems in a dataset's outputs (each is printed with the file it concerns):
   * a missing or damaged file, a missing or duplicated task, counts, fingerprints or statistics
   * that disagree. Nothing changes by itself: fix or redo the shards named, then verify again.
   */
  VERIFY_FAILED: 9,
  /** Interrupted by a signal. */
  INTERRUPTED: 130,
} as const;

/** One line per exit code, for `--help`. */
export const EXIT_CODE_HELP = [
  '0    success',
  '1    unexpected failure (see the message; storage or ledger trouble, or a bug)',
  '2    bad usage (unknown flag, invalid value)',
  '3    invalid input (no valid task, --strict stopped at a bad line, unreadable file)',
  '4    conflict (the output holds a different or live dataset, or a create is running there)',
  '5    nothing available to claim',
  '6    not the holder of that claim (use --force to override, recorded as forced)',
  '7    not found (dataset, shard or file)',
  '8    work: shards are failed for good (see status; reset them to run again)',
  '9    verify: the outputs have problems (each printed with its file)',
  '130  interrupted',
];
