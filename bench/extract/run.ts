/**
 * bench/extract: activation-extraction throughput on a generated Qwen2.5-0.5B-shaped model
 * (24 layers, hidden 896, 14/2 heads, MLP 4864, vocab 151936), side by side in one run with
 * (a) this machine's measured fp32 matrix-multiply rate (onnxruntime, one MatMul of the
 * model's shapes; numpy too when available), to report the fraction of peak, (b) PyTorch on
 * CPU running the same weights, when `import torch` works in some python3, and (c) the JAX
 * extractor (worker/jax) on numpy over the extractor protocol, reading the same weights from a
 * Hugging Face checkpoint folder: a correctness row (its largest difference from shardline's
 * ONNX rows, relative to their RMS); its speed is not a goal.
 *
 *   npm run build && node dist/bench/extract/run.js [--quick] [--threads 2] [--seq 512]
 *     [--batches 1,4] [--iters 3] [--out bench/out/extract] [--python /usr/bin/python3]
 *     [--no-torch] [--no-jax]
 *
 * Not a test: it asserts nothing, it prints a table (and writes it as JSON beside the model).
 * The model (2.5 GB of weights, and 2.5 GB more as a checkpoint folder for (c)) is generated
 * once into `--out` and reused.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';

import type { ExtractedBatch } from '../../worker/extraction/activations';
import { ExtractionEngine } from '../../worker/extraction/engine';
import { packedRows } from '../../worker/extraction/activations';
import { ProtocolExtractor } from '../../worker/extraction/protocol-extractor';
import { Prng } from '../../core/random';
import { ElemType, GraphBuilder } from '../../synthetic/graph-builder';
import {
  QWEN25_05B,
  generateQwen2Model,
  qwen2Config,
  writeHfCheckpoint,
} from '../../synthetic/qwen2';

interface Args {
  out: string;
  threads: number;
  seq: number;
  batches: number[];
  iters: number;
  python: string[];
  torch: boolean;
  jax: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    out: path.resolve('bench/out/extract'),
    threads: 2,
    seq: 512,
    batches: [1, 4],
    iters: 3,
    python: ['/usr/bin/python3', 'python3'],
    torch: true,
    jax: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const int = (): number => {
      const v = Number(value());
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${flag} must be a positive integer`);
      return v;
    };
    switch (flag) {
      case '--out':
        args.out = path.resolve(value());
        break;
      case '--threads':
        args.threads = int();
        break;
      case '--seq':
        args.seq = int();
        break;
      case '--iters':
        args.iters = int();
        break;
      case '--batches':
        args.batches = value().split(',').map(Number);
        break;
      case '--python':
        args.python = [value()];
        break;
      case '--no-torch':
        args.torch = false;
        break;
      case '--no-jax':
        args.jax = false;
        break;
      case '--quick':
        args.iters = 1;
        break;
      default:
        throw new Error(`unknown flag ${flag}`);
    }
  }
  return args;
}

const shape = QWEN25_05B;
const H = shape.hiddenSize;
const D = H / shape.numHeads;
const KV = shape.numKvHeads * D;
const I = shape.intermediateSize;

/** Multiply-add FLOPs per token of the pruned model (no lm head) at sequence length `seq`. */
function flopsPerToken(seq: number): { matmul: number; attention: number } {
  const proj = H * H + 2 * H * KV + H * H + 3 * H * I;
  // onnxruntime computes the full S×S scores (masked half included): QK^T and PV.
  const attention = 2 * 2 * seq * H;
  return { matmul: shape.numLayers * 2 * proj, attention: shape.numLayers * attention };
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const load = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

function ensureModel(dir: string): string {
  const modelPath = path.join(dir, 'model.onnx');
  const configPath = path.join(dir, 'config.json');
  const want = JSON.stringify(qwen2Config(shape, true));
  if (
    existsSync(modelPath) &&
    existsSync(configPath) &&
    existsSync(path.join(dir, 'model.onnx_data'))
  ) {
    const have = JSON.stringify(JSON.parse(readFileSync(configPath, 'utf8')));
    if (have === want) return modelPath;
  }
  log(`generating the Qwen2.5-0.5B-shaped model into ${dir} (≈2.5 GB, about a minute)...`);
  const t0 = performance.now();
  generateQwen2Model({ dir, shape, externalData: true, lmHead: true, seed: 0 });
  log(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return modelPath;
}

/** The same weights as a Hugging Face checkpoint folder (`DIR/hf`), for the JAX extractor. */
function ensureCheckpoint(dir: string): string {
  const hf = path.join(dir, 'hf');
  const configPath = path.join(hf, 'config.json');
  if (existsSync(path.join(hf, 'model.safetensors')) && existsSync(configPath)) {
    const have = JSON.stringify(JSON.parse(readFileSync(configPath, 'utf8')));
    if (have === JSON.stringify(qwen2Config(shape, true))) return hf;
  }
  log(`writing the same weights as a checkpoint folder into ${hf} (≈2.5 GB)...`);
  writeHfCheckpoint(hf, shape, 0, true);
  return hf;
}

/**
 * Per layer, the largest |a - b| over the rows of two batches of the same inputs, divided by
 * the RMS of `a`'s values.
 */
function relativeError(a: ExtractedBatch, b: ExtractedBatch): number[] {
  return a.layers.map((_, l) => {
    const x = packedRows(a, l);
    const y = packedRows(b, l);
    let max = 0;
    let sq = 0;
    for (let i = 0; i < x.length; i++) {
      max = Math.max(max, Math.abs(x[i]! - y[i]!));
      sq += x[i]! * x[i]!;
    }
    return max / Math.sqrt(sq / x.length);
  });
}

/**
 * `weights.json` for the PyTorch script: where each initializer sits in `model.onnx_data`, or
 * its values when it is small enough to be stored inline (under 1 KiB: biases of small heads).
 */
function writeWeightsIndex(modelPath: string): void {
  const model = onnx.ModelProto.decode(readFileSync(modelPath));
  const index: Record<string, { dims: number[]; offset?: number; values?: number[] }> = {};
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataType !== ElemType.FLOAT) continue;
    const dims = (t.dims ?? []).map(Number);
    const ext = new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
    if (ext.has('offset')) {
      index[t.name ?? ''] = { dims, offset: Number(ext.get('offset')) };
    } else if (t.rawData) {
      const raw = Uint8Array.from(t.rawData);
      index[t.name ?? ''] = { dims, values: Array.from(new Float32Array(raw.buffer)) };
    }
  }
  writeFileSync(path.join(path.dirname(modelPath), 'weights.json'), JSON.stringify(index));
}

/** fp32 MatMul rate of onnxruntime on [M,K]x[K,N], best of `iters`, in FLOP/s. */
async function ortMatmul(
  dir: string,
  m: number,
  k: number,
  n: number,
  threads: number,
  iters: number,
): Promise<number> {
  const file = path.join(dir, `matmul_${k}x${n}.onnx`);
  if (!existsSync(file)) {
    const g = new GraphBuilder();
    const a = g.input({ name: 'a', elemType: ElemType.FLOAT, dims: ['m', k] });
    const w = g.initializer('w', [k, n], ElemType.FLOAT, () =>
      Prng.fromKey('matmul', k, n).fillUniform(new Float32Array(k * n), 0.1),
    );
    g.op('MatMul', [a, w], {}, { outputNames: ['y'] });
    g.output({ name: 'y', elemType: ElemType.FLOAT, dims: ['m', n] });
    g.save(file);
  }
  const session = await ort.InferenceSession.create(file, {
    intraOpNumThreads: threads,
    executionProviders: ['cpu'],
  });
  const feed = {
    a: new ort.Tensor('float32', Prng.fromKey('a').fillUniform(new Float32Array(m * k), 1), [m, k]),
  };
  await session.run(feed);
  let best = Infinity;
  for (let i = 0; i < Math.max(3, iters); i++) {
    const t0 = performance.now();
    await session.run(feed);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  await session.release();
  return (2 * m * k * n) / best;
}

/** `rel` under the nearest ancestor of this file that has it (works from dist/ and sources). */
function findUp(rel: string): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, rel))) return path.join(dir, rel);
    if (path.dirname(dir) === dir) throw new Error(`${rel} not found above ${__dirname}`);
  }
}

function findPython(candidates: string[], module: string): string | null {
  for (const py of candidates) {
    if (spawnSync(py, ['-c', `import ${module}`], { stdio: 'ignore' }).status === 0) return py;
  }
  return null;
}

function numpyMatmul(
  python: string,
  m: number,
  k: number,
  n: number,
  threads: number,
): number | null {
  const code = [
    'import numpy as np, time',
    `a = np.random.rand(${m}, ${k}).astype(np.float32); b = np.random.rand(${k}, ${n}).astype(np.float32)`,
    'a @ b',
    'best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))',
    `print(2 * ${m} * ${k} * ${n} / best)`,
  ].join('\n');
  const env = {
    ...process.env,
    OPENBLAS_NUM_THREADS: String(threads),
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
  };
  const r = spawnSync(python, ['-c', code], { encoding: 'utf8', env });
  return r.status === 0 ? Number(r.stdout.trim()) : null;
}

interface Row {
  engine: string;
  batch: number;
  seq: number;
  tokPerS: number;
  runS: number;
  gflops: number;
  ofPeak: number;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const started = load();
  const cpu =
    (readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ??
    os.cpus()[0]?.model ??
    '?';
  log(`bench/extract: ${os.cpus().length} CPUs (${cpu}), threads ${args.threads}, load ${started}`);
  const modelPath = ensureModel(args.out);
  writeWeightsIndex(modelPath);

  const M = args.seq * Math.max(...args.batches);
  log('measuring fp32 matmul rate (onnxruntime, one MatMul)...');
  const peaks = [
    await ortMatmul(args.out, M, H, I, args.threads, args.iters),
    await ortMatmul(args.out, M, I, H, args.threads, args.iters),
  ];
  const peak = Math.max(...peaks);
  const numpyPy = findPython(['python3', ...args.python], 'numpy');
  const npPeak = numpyPy ? numpyMatmul(numpyPy, M, H, I, args.threads) : null;

  const rows: Row[] = [];
  const perToken = flopsPerToken(args.seq);
  const flopTok = perToken.matmul + perToken.attention;
  const row = (engineName: string, batch: number, runS: number): Row => {
    const tokPerS = (batch * args.seq) / runS;
    return {
      engine: engineName,
      batch,
      seq: args.seq,
      tokPerS,
      runS,
      gflops: (tokPerS * flopTok) / 1e9,
      ofPeak: (tokPerS * flopTok) / peak,
    };
  };

  log('loading the model in shardline (fp32, all 24 layers, lm head pruned)...');
  const engine = await ExtractionEngine.open({
    modelPath,
    dtype: 'float32',
    intraOpNumThreads: args.threads,
    executionProviders: ['cpu'],
  });
  let compare: { tokens: string; values: string; layer: number } | null = null;
  /** The inputs of each batch size, and shardline's rows for the first (for the JAX check). */
  const inputs = new Map<number, Int32Array[]>();
  let reference: ExtractedBatch | null = null;
  try {
    log(
      `  prepared ${engine.info.preparedModelPath} (reused: ${engine.info.reusedPreparedModel}), load ${engine.info.loadMs} ms`,
    );
    for (const batch of args.batches) {
      const rng = Prng.fromKey('bench', batch);
      const seqs = Array.from({ length: batch }, () =>
        Int32Array.from({ length: args.seq }, () => rng.nextInt(shape.vocabSize)),
      );
      inputs.set(batch, seqs);
      const first = await engine.extract(seqs);
      reference ??= first;
      let best = Infinity;
      for (let i = 0; i < args.iters; i++) {
        const t0 = performance.now();
        await engine.extract(seqs);
        best = Math.min(best, (performance.now() - t0) / 1000);
      }
      rows.push(row('shardline (onnxruntime-node)', batch, best));
      log(`  batch ${batch}: ${rows.at(-1)!.tokPerS.toFixed(1)} tok/s`);
    }
    // A short sequence for checking PyTorch against the same weights.
    const rng = Prng.fromKey('compare');
    const tokens = Int32Array.from({ length: 32 }, () => rng.nextInt(shape.vocabSize));
    const layer = shape.numLayers - 1;
    const out = await engine.extract([tokens]);
    compare = {
      tokens: path.join(args.out, 'compare.i32'),
      values: path.join(args.out, 'compare.f32'),
      layer,
    };
    writeFileSync(compare.tokens, tokens);
    writeFileSync(compare.values, packedRows(out, layer));
  } finally {
    await engine.close();
  }

  let jaxNote = 'not run (--no-jax)';
  if (args.jax) {
    const py = findPython(['python3', ...args.python], 'numpy');
    if (!py) {
      jaxNote = 'not available (no python3 with numpy)';
    } else {
      const hf = ensureCheckpoint(args.out);
      log('loading the model in the JAX extractor (numpy, fp32, all 24 layers)...');
      const t0 = performance.now();
      const jax = await ProtocolExtractor.open({
        command: [py, '-m', 'shardline_jax', '--array', 'numpy'],
        env: {
          ...process.env,
          PYTHONPATH: findUp(path.join('worker', 'jax')),
          OPENBLAS_NUM_THREADS: String(args.threads),
          OMP_NUM_THREADS: String(args.threads),
          MKL_NUM_THREADS: String(args.threads),
        },
        modelPath: hf,
        computeDtype: 'float32',
        outputDtype: 'float32',
        maxBatchSize: Math.max(...args.batches),
        maxBatchTokens: Math.max(...args.batches) * args.seq,
        maxSeqLength: args.seq,
        backend: 'jax',
      });
      try {
        log(`  loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        for (const batch of args.batches) {
          const seqs = inputs.get(batch)!;
          const first = await jax.extract(seqs);
          if (reference && batch === args.batches[0]) {
            const errors = relativeError(reference, first);
            const worst = errors.indexOf(Math.max(...errors));
            jaxNote = `${py}, numpy; max |shardline - JAX extractor| / RMS over ${batch} × ${args.seq} tokens: ${errors[worst]!.toExponential(2)} (layer ${worst}; layer ${shape.numLayers - 1}: ${errors.at(-1)!.toExponential(2)})`;
          }
          let best = Infinity;
          for (let i = 0; i < args.iters; i++) {
            const t1 = performance.now();
            await jax.extract(seqs);
            best = Math.min(best, (performance.now() - t1) / 1000);
          }
          rows.push(row('JAX extractor on numpy (CPU)', batch, best));
          log(`  batch ${batch}: ${rows.at(-1)!.tokPerS.toFixed(1)} tok/s`);
        }
      } finally {
        await jax.close();
      }
    }
  }

  let torchNote = 'not run (--no-torch)';
  let compareNote = '';
  if (args.torch) {
    const py = findPython(args.python, 'torch');
    if (!py) {
      torchNote = `not available (no python3 with torch among ${args.python.join(', ')}; Debian: apt-get install python3-torch)`;
    } else {
      const script = findUp(path.join('bench', 'extract', 'torch_forward.py'));
      for (const [k, batch] of args.batches.entries()) {
        const extra =
          k === 0 && compare
            ? [
                '--tokens',
                compare.tokens,
                '--compare',
                compare.values,
                '--compare-layer',
                String(compare.layer),
              ]
            : [];
        log(`running PyTorch batch ${batch}...`);
        const r = spawnSync(
          py,
          [
            script,
            args.out,
            '--batch',
            String(batch),
            '--seq',
            String(args.seq),
            '--iters',
            String(args.iters),
            '--threads',
            String(args.threads),
            ...extra,
          ],
          { encoding: 'utf8', maxBuffer: 1 << 24 },
        );
        if (r.status !== 0) {
          torchNote = `failed: ${r.stderr.trim().split('\n').at(-1) ?? ''}`;
          break;
        }
        const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
          torch: string;
          tok_s: number;
          compare_max_abs_diff?: number;
          compare_max_abs_value?: number;
        };
        rows.push(row(`PyTorch ${res.torch} (CPU)`, batch, (batch * args.seq) / res.tok_s));
        torchNote = `${py}, torch ${res.torch}`;
        if (res.compare_max_abs_diff !== undefined) {
          compareNote = `PyTorch vs shardline fp32, layer ${compare.layer} residuals of 32 tokens: max |diff| ${res.compare_max_abs_diff.toExponential(2)} (max |value| ${res.compare_max_abs_value!.toFixed(1)})`;
        }
      }
    }
  }

  const ended = load();
  const lines = [
    `machine: ${os.cpus().length} CPUs, ${cpu}; threads ${args.threads}; load average (1/5/15 min) at start ${started}, at end ${ended}`,
    `model: Qwen2.5-0.5B-shaped synthetic (24 layers, hidden 896, 14/2 heads, MLP 4864, vocab 151936), fp32, all 24 residual streams, lm head pruned`,
    `work per token at seq ${args.seq}: ${(perToken.matmul / 1e6).toFixed(0)} MFLOP projections + ${(perToken.attention / 1e6).toFixed(0)} MFLOP attention (full S×S)`,
    `measured fp32 matmul peak (onnxruntime MatMul [${M}x${H}]x[${H}x${I}] / [${M}x${I}]x[${I}x${H}], best of ${Math.max(3, args.iters)}): ${peaks.map((p) => (p / 1e9).toFixed(1)).join(' / ')} GFLOP/s` +
      (npPeak ? `; numpy [${M}x${H}]x[${H}x${I}]: ${(npPeak / 1e9).toFixed(1)} GFLOP/s` : ''),
    `PyTorch: ${torchNote}`,
    `JAX extractor: ${jaxNote}`,
    ...(compareNote ? [compareNote] : []),
    '',
    '| engine | batch × seq | tokens/s | s per batch | GFLOP/s | of matmul peak |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.engine} | ${r.batch} × ${r.seq} | ${r.tokPerS.toFixed(1)} | ${r.runS.toFixed(2)} | ${r.gflops.toFixed(1)} | ${(r.ofPeak * 100).toFixed(0)} % |`,
    ),
  ];
  for (const batch of args.batches) {
    const ours = rows.find((r) => r.batch === batch && r.engine.startsWith('shardline'));
    const theirs = rows.find((r) => r.batch === batch && r.engine.startsWith('PyTorch'));
    if (ours && theirs)
      lines.push(
        `batch ${batch}: shardline / PyTorch = ${(ours.tokPerS / theirs.tokPerS).toFixed(2)}x`,
      );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  writeFileSync(
    path.join(args.out, 'results.json'),
    JSON.stringify(
      { started, ended, peaks, npPeak, rows, torchNote, compareNote, jaxNote },
      null,
      2,
    ),
  );
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
