/**
 * The flags that say how prompts are built and activations extracted, shared by `work` (which
 * runs them) and `plan` (which estimates what they will cost), so the two read the same words
 * with the same defaults.
 */
import { ConfigError } from '../core/errors';
import { parsePositions } from '../worker/extraction/positions';
import type { WorkConfig } from '../worker/main';
import type { FlagSpec, ParsedArgs } from './args';

/** `all`, `10,11,12`, `10-23`, or a mix: the layers to extract (undefined = all). */
export function parseLayers(text: string): number[] | undefined {
  if (text.trim() === 'all') return undefined;
  const layers = new Set<number>();
  for (const part of text.split(',').map((p) => p.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m)
      throw new ConfigError(
        `--layers must be "all" or a list like 10,11,12 or 10-23, got ${JSON.stringify(text)}`,
      );
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new ConfigError(`--layers range ${part} goes backwards`);
    for (let l = a; l <= b; l++) layers.add(l);
  }
  return [...layers].sort((x, y) => x - y);
}

/** What `EXTRACTION_FLAGS` set, in the words of the worker's config (and the plan's). */
export type ExtractionSettings = Pick<
  WorkConfig,
  | 'modelName'
  | 'tokenizerPath'
  | 'tokenizerConfigPath'
  | 'chatTemplatePath'
  | 'promptTemplatePath'
  | 'layers'
  | 'positions'
  | 'dtype'
  | 'batchSize'
  | 'maxBatchTokens'
  | 'maxSeqLength'
  | 'predictionsPerTask'
  | 'augment'
  | 'seed'
  | 'threads'
  | 'executionProviders'
  | 'partSizeBytes'
>;

/** The values of `EXTRACTION_FLAGS` (MB become bytes, fp16/fp32 the dtype's name). */
export function extractionSettings(args: ParsedArgs): ExtractionSettings {
  const opt = <T>(name: string, v: T | undefined): Partial<Record<string, T>> =>
    v === undefined ? {} : { [name]: v };
  return {
    ...opt('modelName', args.optStr('model_name')),
    ...opt('tokenizerPath', args.optStr('tokenizer_path')),
    ...opt('tokenizerConfigPath', args.optStr('tokenizer_config_path')),
    ...opt('chatTemplatePath', args.optStr('chat_template_path')),
    ...opt('promptTemplatePath', args.optStr('prompt_template')),
    ...opt('layers', parseLayers(args.str('layers'))),
    positions: parsePositions(args.str('positions')),
    dtype: args.str('dtype') === 'fp32' ? 'float32' : 'float16',
    batchSize: args.num('batch_size'),
    maxBatchTokens: args.num('max_batch_tokens'),
    maxSeqLength: args.num('max_seq_length'),
    predictionsPerTask: args.num('predictions_per_task'),
    augment: args.bool('augment'),
    seed: args.num('seed'),
    ...opt('threads', args.optNum('threads')),
    executionProviders: args
      .str('execution_provider')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean),
    partSizeBytes: Math.floor(args.num('part_size_mb') * 1024 * 1024),
  };
}

/** Model, tokenizer, prompt, batch and output-format flags, in the order `--help` lists them. */
export const EXTRACTION_FLAGS = {
  model_name: {
    name: 'model_name',
    type: 'string',
    placeholder: 'NAME',
    description: "recorded in the parts' metadata; default the model folder's name",
  },
  tokenizer_path: {
    name: 'tokenizer_path',
    type: 'string',
    placeholder: 'FILE',
    description: "tokenizer.json; default the model folder's, else the bundled Qwen tokenizer",
  },
  tokenizer_config_path: {
    name: 'tokenizer_config_path',
    type: 'string',
    placeholder: 'FILE',
    description: 'tokenizer_config.json (chat template, special tokens)',
  },
  chat_template_path: {
    name: 'chat_template_path',
    type: 'string',
    placeholder: 'FILE',
    description: "a Jinja chat template overriding the tokenizer config's",
  },
  prompt_template: {
    name: 'prompt_template',
    type: 'string',
    placeholder: 'FILE',
    description:
      'the ARC instruction template (see worker/extraction/templates/arc-default.prompt)',
  },
  layers: {
    name: 'layers',
    type: 'string',
    default: 'all',
    placeholder: 'LIST',
    description: 'layers to extract: all, 10,11,12 or 10-23',
  },
  positions: {
    name: 'positions',
    type: 'string',
    default: 'all',
    placeholder: 'WHICH',
    description:
      'token positions stored: all, last, answer (ARC: where the answer grid opens), or a list like 0,16-31,-1',
  },
  dtype: {
    name: 'dtype',
    type: 'string',
    default: 'fp16',
    choices: ['fp16', 'fp32'],
    description: 'stored activation type',
  },
  batch_size: {
    name: 'batch_size',
    type: 'int',
    default: 4,
    min: 1,
    max: 1024,
    placeholder: 'N',
    description: 'prompts per model run',
  },
  max_batch_tokens: {
    name: 'max_batch_tokens',
    type: 'int',
    default: 4096,
    min: 1,
    placeholder: 'N',
    description: 'padded tokens per model run',
  },
  max_seq_length: {
    name: 'max_seq_length',
    type: 'int',
    default: 2048,
    min: 8,
    placeholder: 'N',
    description:
      'longest prompt; longer ARC prompts drop trailing train examples, else are skipped',
  },
  predictions_per_task: {
    name: 'predictions_per_task',
    type: 'int',
    default: 8,
    min: 1,
    max: 1024,
    placeholder: 'N',
    description: 'augmented prompts per ARC test input',
  },
  augment: {
    name: 'augment',
    type: 'boolean',
    default: true,
    description:
      'augment ARC tasks (flips/rotations x colour permutation); --no-augment for one plain prompt',
  },
  seed: {
    name: 'seed',
    type: 'int',
    default: 0,
    placeholder: 'N',
    description: 'augmentation seed',
  },
  threads: {
    name: 'threads',
    type: 'int',
    min: 1,
    max: 1024,
    placeholder: 'N',
    description: 'onnxruntime threads; default all cores',
  },
  execution_provider: {
    name: 'execution_provider',
    type: 'string',
    default: 'cpu',
    placeholder: 'LIST',
    description: 'onnxruntime providers in order, e.g. cuda,cpu (needs a CUDA build)',
  },
  part_size_mb: {
    name: 'part_size_mb',
    type: 'number',
    default: 256,
    min: 0.000001,
    placeholder: 'MB',
    description: 'cut an output part at a sample boundary once it holds this much',
  },
} as const satisfies Record<string, FlagSpec>;
