/**
 * What `shardline verify` reports (cli/verify.ts finds it): every problem with the file it
 * concerns, per-shard counts, totals and the read rate; and the text a person reads.
 */
import { formatBytes, formatDuration, formatTable } from './format';

/** The kinds of problem verify tells apart (`--json` carries them). */
export type ProblemKind =
  /** A file the manifests or the ledger list is not there. */
  | 'missing'
  /** A file's size is not the one recorded. */
  | 'size'
  /** A file's CRC32C is not the one recorded. */
  | 'checksum'
  /** A file is not a well-formed part, index or manifest (tensor table, shapes, lines). */
  | 'format'
  /** Something was written by another run (another model, layers, positions, ...). */
  | 'fingerprint'
  /** A task or sample is missing, duplicated, or where it does not belong. */
  | 'tasks'
  /** Counts (samples, rows, tokens, parts, bytes) disagree between files, manifests and ledger. */
  | 'counts'
  /** Statistics disagree with their parts (or, recomputed, with their rows). */
  | 'stats'
  /** A manifest is missing, or disagrees with the ledger or another manifest. */
  | 'manifest'
  /** The ledger disagrees with itself or with the dataset's metadata. */
  | 'ledger';

/** One problem: the file (URI) it concerns, its kind, and what is wrong. */
export interface VerifyProblem {
  uri: string;
  kind: ProblemKind;
  message: string;
  /** The shard it concerns, when it concerns one. */
  shard_id?: number;
}

/** One shard's line of the summary. */
export interface ShardSummary {
  shard_id: number;
  /** Its status in the ledger. */
  status: string;
  /** Parts checked (listed by its manifest, or committed in the ledger while it runs). */
  parts: number;
  samples: number;
  rows: number;
  tokens: number;
  skipped: number;
  /** Bytes of its parts' files. */
  bytes: number;
  /** Problems found in it. */
  problems: number;
}

/** The tolerances statistics are compared with (relative to the largest magnitude of each vector). */
export interface StatsTolerance {
  /** Manifest figures against the merge of their parts' tensors. */
  manifest: number;
  /** A part's tensors against a float64 recomputation from its rows (`--recompute_stats`). */
  recompute: number;
}

/** The outcome of one verify. */
export interface VerifyReport {
  dataset_id: string;
  /** The outputs checked (`--output_dir`, or the dataset's `activations/`). */
  output_dir: string;
  /** The ledger read (a file, or the Firestore collection). */
  ledger: string;
  /** Every shard completed in the ledger (else only completed shards and committed parts were expected). */
  complete: boolean;
  shards_total: number;
  shards_completed: number;
  /** The run fingerprint the dataset's parts must carry, or null when nothing is committed yet. */
  fingerprint: string | null;
  recompute_stats: boolean;
  tolerance: StatsTolerance;
  totals: {
    parts: number;
    files: number;
    samples: number;
    rows: number;
    tokens: number;
    skipped: number;
    bytes: number;
  };
  /** Bytes read to check them (both files of every part present). */
  bytes_read: number;
  seconds: number;
  /** `bytes_read` / `seconds`, in MB (10^6 bytes) per second. */
  mb_per_s: number;
  shards: ShardSummary[];
  problems: VerifyProblem[];
  /** Observations that are not problems (files nobody committed, manifests of running shards). */
  notes: string[];
}

/** Problems printed in text; `--json` carries them all. */
const TEXT_PROBLEMS = 200;

/** The report for people: the summary table, the rate, then every problem (or "OK"). */
export function renderVerifyReport(r: VerifyReport): string {
  const n = (x: number): string => x.toLocaleString('en-US');
  const lines: string[] = [
    `Verified ${r.output_dir}`,
    `  dataset ${r.dataset_id}: ${r.shards_completed} of ${r.shards_total} shards completed` +
      (r.complete ? '' : ' (a running dataset: completed shards and committed parts checked)'),
    `  fingerprint ${r.fingerprint ?? '(none: nothing committed yet)'}; ledger ${r.ledger}`,
    '',
  ];
  const rows = r.shards.map((s) => [
    String(s.shard_id),
    s.status,
    n(s.parts),
    n(s.samples),
    n(s.rows),
    n(s.tokens),
    n(s.skipped),
    formatBytes(s.bytes),
    s.problems === 0 ? 'ok' : n(s.problems),
  ]);
  const t = r.totals;
  rows.push([
    'total',
    '',
    n(t.parts),
    n(t.samples),
    n(t.rows),
    n(t.tokens),
    n(t.skipped),
    formatBytes(t.bytes),
    r.problems.length === 0 ? 'ok' : n(r.problems.length),
  ]);
  lines.push(
    formatTable(
      ['shard', 'status', 'parts', 'samples', 'rows', 'tokens', 'skipped', 'bytes', 'problems'],
      rows,
      ['right', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    ),
    '',
    `Read ${formatBytes(r.bytes_read)} (${n(t.files)} files) in ${formatDuration(r.seconds * 1000)}: ` +
      `${r.mb_per_s.toFixed(1)} MB/s. ` +
      (r.recompute_stats
        ? `Statistics recomputed from every row (float64, within ${r.tolerance.recompute} relative).`
        : 'Statistics checked against the parts (--recompute_stats also recomputes them from the rows).'),
  );
  for (const note of r.notes) lines.push(`note: ${note}`);
  lines.push('');
  if (r.problems.length === 0) {
    lines.push(
      'OK: every file present and intact, every task present once, counts, fingerprint and statistics agree.',
    );
  } else {
    lines.push(`${n(r.problems.length)} problem(s):`);
    for (const p of r.problems.slice(0, TEXT_PROBLEMS))
      lines.push(`  ${p.uri}: ${p.kind}: ${p.message}`);
    if (r.problems.length > TEXT_PROBLEMS)
      lines.push(`  ... and ${n(r.problems.length - TEXT_PROBLEMS)} more (--json lists them all)`);
  }
  return `${lines.join('\n')}\n`;
}
