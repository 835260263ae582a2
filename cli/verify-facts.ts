/**
 * What one part says about itself, for `shardline verify`, and whether it agrees with itself:
 * the format, its metadata against its own fingerprint, the tensor table against the
 * metadata (layers, hidden size, dtype, counts), each index line against `sample_offsets`,
 * `sample_task_index` and `token_positions`, and its statistics tensors against its row count
 * (and, recomputed, against its rows). Cross-file checks live in cli/verify.ts.
 */
import type { LayerStats } from '../core/layer-stats';
import { PART_FORMAT, PART_FORMAT_VERSION, runFingerprint } from '../worker/extraction/part-writer';
import type { IndexRecord } from '../worker/extraction/part-writer';
import type { PartScan } from './verify-part';
import type { ProblemKind, VerifyProblem } from './verify-report';
import type { SampleRef, SkipRef } from './verify-tasks';

/** Per-line problems reported for one index file before the rest are counted. */
const LINE_PROBLEMS = 3;

/** What a part holds, as far as it could be read. */
export interface PartFacts {
  /** `__metadata__`, when the safetensors file is readable. */
  metadata: Record<string, string> | null;
  samples: number | null;
  tokens: number | null;
  rows: number | null;
  /** Entries of its `skipped` metadata. */
  skipped: number | null;
  /** Its statistics tensors, keyed `resid_post.L`. */
  stats: Record<string, LayerStats> | null;
  /** From the index file. */
  sampleRefs: SampleRef[];
  /** From the `skipped` metadata. */
  skipRefs: SkipRef[];
}

/** Where the part is and what it must be. */
export interface PartContext {
  /** The safetensors file's URI. */
  uri: string;
  /** The index file's URI. */
  indexUri: string;
  shardId: number;
  partIndex: number;
  /** Relative tolerance of recomputed statistics. */
  recomputeTolerance: number;
}

/**
 * How far `got` is from `want`, or null when within `tol`: counts exactly; the mean within
 * `tol` of the larger of its largest magnitude and the largest standard deviation; m2 and the
 * norm sum within `tol` of their largest magnitude.
 */
export function statsDiff(got: LayerStats, want: LayerStats, tol: number): string | null {
  if (got.count !== want.count) return `${got.count} rows, expected ${want.count}`;
  if (got.mean.length !== want.mean.length || got.m2.length !== want.m2.length)
    return `width ${got.mean.length}, expected ${want.mean.length}`;
  const maxAbs = (v: readonly number[]): number => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const worst = (a: readonly number[], b: readonly number[]): number =>
    a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
  const std = want.count > 0 ? Math.sqrt(maxAbs(want.m2) / want.count) : 0;
  const checks: Array<[string, number, number]> = [
    ['mean', worst(got.mean, want.mean), Math.max(maxAbs(want.mean), std)],
    ['m2', worst(got.m2, want.m2), maxAbs(want.m2)],
    ['norm_sum', Math.abs(got.norm_sum - want.norm_sum), Math.abs(want.norm_sum)],
  ];
  for (const [name, diff, scale] of checks) {
    // NaN never passes: a comparison with NaN is false.
    if (!(diff <= tol * scale))
      return `${name} differs by ${diff.toExponential(2)} (${(diff / (scale || 1)).toExponential(2)} relative, tolerance ${tol})`;
  }
  return null;
}

/** Reads the I64 tensor bytes as numbers. */
function int64s(bytes: Buffer | undefined): number[] | null {
  if (!bytes) return null;
  const out: number[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8) out.push(Number(bytes.readBigInt64LE(at)));
  return out;
}

function float64s(bytes: Buffer | undefined): number[] | null {
  if (!bytes) return null;
  const out: number[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8) out.push(bytes.readDoubleLE(at));
  return out;
}

/** The facts of one part from its scan and its index file's bytes (either may be missing). */
export function partFacts(
  scan: PartScan | null,
  index: Buffer | null,
  ctx: PartContext,
): { facts: PartFacts; problems: VerifyProblem[] } {
  const problems: VerifyProblem[] = [];
  const problem = (uri: string, kind: ProblemKind, message: string): void => {
    problems.push({ uri, kind, message });
  };
  const facts: PartFacts = {
    metadata: null,
    samples: null,
    tokens: null,
    rows: null,
    skipped: null,
    stats: null,
    sampleRefs: [],
    skipRefs: [],
  };
  let offsets: number[] | null = null;
  let taskIndexes: number[] | null = null;
  let positions: Int32Array | null = null;
  let allPositions = false;

  if (scan?.structure) problem(ctx.uri, 'format', `not a readable part: ${scan.structure}`);
  if (scan?.header) {
    const header = scan.header;
    const meta = header.metadata;
    facts.metadata = meta;
    if (meta.format !== PART_FORMAT || meta.format_version !== String(PART_FORMAT_VERSION))
      problem(
        ctx.uri,
        'format',
        `format ${meta.format ?? 'none'} version ${meta.format_version ?? 'none'}; verify knows ${PART_FORMAT} version ${PART_FORMAT_VERSION}`,
      );
    if (runFingerprint(meta) !== meta.fingerprint)
      problem(
        ctx.uri,
        'fingerprint',
        `its metadata does not hash to its fingerprint ${meta.fingerprint ?? '(none)'}: edited, or not written by shardline`,
      );
    if (meta.shard_id !== String(ctx.shardId) || meta.part_index !== String(ctx.partIndex))
      problem(
        ctx.uri,
        'format',
        `its metadata says shard ${meta.shard_id ?? '?'} part ${meta.part_index ?? '?'}, it is at shard ${ctx.shardId} part ${ctx.partIndex}`,
      );
    allPositions = meta.positions === 'all';
    const want = (name: string, dtype: string, shape: number[]): boolean => {
      const t = header.tensors.get(name);
      if (!t) {
        problem(ctx.uri, 'format', `has no tensor ${name}`);
        return false;
      }
      if (t.dtype !== dtype || t.shape.join() !== shape.join()) {
        problem(
          ctx.uri,
          'format',
          `tensor ${name} is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`,
        );
        return false;
      }
      return true;
    };
    offsets = int64s(scan.small.get('sample_offsets'));
    const n = offsets ? offsets.length - 1 : -1;
    const R = offsets?.[n] ?? -1;
    if (!offsets || n < 0) {
      problem(ctx.uri, 'format', 'has no sample_offsets');
      offsets = null;
    } else if (offsets[0] !== 0 || offsets.some((o, k) => k > 0 && o < offsets![k - 1]!)) {
      problem(ctx.uri, 'format', 'sample_offsets does not rise from 0');
      offsets = null;
    } else {
      facts.samples = n;
      facts.rows = R;
      if (want('sample_task_index', 'I64', [n]))
        taskIndexes = int64s(scan.small.get('sample_task_index'));
      if (want('token_positions', 'I32', [R])) {
        const b = scan.small.get('token_positions')!;
        positions = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
      }
      want('token_ids', 'I32', [R]);
      if (String(n) !== meta.n_samples || String(R) !== meta.n_rows)
        problem(
          ctx.uri,
          'counts',
          `metadata says ${meta.n_samples ?? '?'} samples and ${meta.n_rows ?? '?'} rows, its tensors hold ${n} and ${R}`,
        );
    }
    let layers: number[] = [];
    try {
      layers = JSON.parse(meta.layers ?? '') as number[];
      if (!Array.isArray(layers)) throw new Error('not a list');
    } catch {
      problem(ctx.uri, 'format', `metadata layers ${meta.layers ?? '(none)'} is not a JSON list`);
      layers = [];
    }
    const hidden = Number(meta.hidden_size);
    const rowsDtype = meta.dtype === 'float32' ? 'F32' : 'F16';
    facts.stats = {};
    for (const layer of layers) {
      const name = `resid_post.${layer}`;
      if (R >= 0) want(name, rowsDtype, [R, hidden]);
      const okMean = want(`stats.${name}.mean`, 'F64', [hidden]);
      const okM2 = want(`stats.${name}.m2`, 'F64', [hidden]);
      const okCount = want(`stats.${name}.count_norm`, 'F64', [2]);
      if (!(okMean && okM2 && okCount)) continue;
      const [count = NaN, normSum = NaN] = float64s(scan.small.get(`stats.${name}.count_norm`))!;
      const s: LayerStats = {
        count,
        mean: float64s(scan.small.get(`stats.${name}.mean`))!,
        m2: float64s(scan.small.get(`stats.${name}.m2`))!,
        norm_sum: normSum,
      };
      facts.stats[name] = s;
      if (R >= 0 && count !== R)
        problem(ctx.uri, 'stats', `stats.${name} counts ${count} rows, the part holds ${R}`);
      const again = scan.recomputed?.[name];
      if (again) {
        const diff = statsDiff(s, again, ctx.recomputeTolerance);
        if (diff)
          problem(ctx.uri, 'stats', `stats.${name} disagrees with its rows recomputed: ${diff}`);
      }
    }
    const extra = [...header.tensors.keys()].filter(
      (t) => /^resid_post\./.test(t) && !layers.some((l) => t === `resid_post.${l}`),
    );
    if (extra.length > 0)
      problem(ctx.uri, 'format', `holds ${extra.join(', ')}, not among its layers ${meta.layers}`);
    try {
      const skipped = JSON.parse(meta.skipped ?? '[]') as Array<Record<string, unknown>>;
      facts.skipped = skipped.length;
      facts.skipRefs = skipped.map((s) => ({
        task: Number(s.task_index),
        test: typeof s.test_index === 'number' ? s.test_index : null,
        aug: typeof s.augmentation_index === 'number' ? s.augmentation_index : null,
        reason: typeof s.reason === 'string' ? s.reason : '',
        file: ctx.uri,
      }));
    } catch {
      problem(ctx.uri, 'format', 'metadata skipped is not a JSON list');
    }
  }

  if (index) {
    const text = index.toString('utf8');
    const lines = text.split('\n');
    if (lines.pop() !== '') problem(ctx.indexUri, 'format', 'does not end with a newline');
    const lineProblems: string[] = [];
    const records: IndexRecord[] = [];
    lines.forEach((line, k) => {
      try {
        records.push(JSON.parse(line) as IndexRecord);
      } catch {
        lineProblems.push(`line ${k + 1} is not JSON`);
      }
    });
    if (offsets && records.length !== offsets.length - 1)
      problem(
        ctx.indexUri,
        'counts',
        `has ${records.length} lines, the part holds ${offsets.length - 1} samples`,
      );
    let tokens = 0;
    records.forEach((r, k) => {
      const aug = r.augmentation?.index ?? 0;
      tokens += r.n_tokens;
      facts.sampleRefs.push({
        task: r.task_index,
        test: r.test_index,
        aug,
        kind: r.kind,
        file: ctx.indexUri,
      });
      const why: string[] = [];
      if (r.sample_id !== `${r.task_index}.${r.test_index}.${aug}`)
        why.push(`sample_id ${r.sample_id} is not task.test.augmentation`);
      if (r.row !== k) why.push(`row ${r.row}`);
      if (offsets && k + 1 < offsets.length) {
        const [a, b] = [offsets[k]!, offsets[k + 1]!];
        if (r.row_offset !== a || r.n_rows !== b - a)
          why.push(`rows ${r.row_offset}+${r.n_rows}, sample_offsets says ${a}+${b - a}`);
        if (taskIndexes && taskIndexes[k] !== r.task_index)
          why.push(`task ${r.task_index}, sample_task_index says ${taskIndexes[k]}`);
        if (positions) {
          const p = positions.subarray(a, b);
          const sound = p.every((v, i) => v >= 0 && v < r.n_tokens && (i === 0 || v > p[i - 1]!));
          if (!sound)
            why.push(`token_positions are not rising positions within its ${r.n_tokens} tokens`);
          else if (allPositions && p.length !== r.n_tokens)
            why.push(`${p.length} rows for ${r.n_tokens} tokens with positions all`);
        }
      }
      if (why.length > 0) lineProblems.push(`line ${k + 1} (${r.sample_id}): ${why.join('; ')}`);
    });
    for (const p of lineProblems.slice(0, LINE_PROBLEMS)) problem(ctx.indexUri, 'format', p);
    if (lineProblems.length > LINE_PROBLEMS)
      problem(
        ctx.indexUri,
        'format',
        `and ${lineProblems.length - LINE_PROBLEMS} more lines disagree`,
      );
    facts.tokens = tokens;
    const metaTokens = facts.metadata?.n_tokens;
    if (metaTokens !== undefined && String(tokens) !== metaTokens)
      problem(
        ctx.indexUri,
        'counts',
        `its samples have ${tokens} tokens, the part's metadata says ${metaTokens}`,
      );
  } else if (facts.metadata) {
    facts.tokens = Number(facts.metadata.n_tokens);
  }
  return { facts, problems };
}
