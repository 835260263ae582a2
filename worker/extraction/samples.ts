/**
 * Turning one task into samples: token ids plus everything needed to join a row of
 * activations back to its task, test input and augmentation (issue 5, Prompts).
 *
 * Pure apart from the tokenizer: the same task, index, options and tokenizer always give the
 * same samples, whatever shard or order it arrives in. A malformed task never throws; it comes
 * back in `skipped` with a reason. Bad *options* are a configuration error and do throw.
 */
import { createHash } from 'node:crypto';

import { ConfigError } from '../../core/errors';
import { augmentationFor, identityAugmentation } from './augment';
import type { Augmentation } from './augment';
import { encodeGrid, transformGrid } from './grid';
import { renderPromptMessages } from './prompt-template';
import type { PromptTemplate, TemplateExample } from './prompt-template';
import { parseTask } from './task';
import type { ArcTask, SkipReason } from './task';
import type { PromptTokenizer } from './tokenizer';

/** How tasks become samples. `resolveSampleOptions` fills the defaults. */
export interface SampleOptions {
  /** Samples per ARC test input when augmenting. Default 8 (the 8 flips/rotations). */
  predictionsPerTask: number;
  /** Augment ARC tasks. Default true. Off: one sample per test input, untransformed. */
  augment: boolean;
  /** Run seed for augmentation. Default 0. */
  seed: number | string;
  /** Longest prompt in tokens. Default 2048. */
  maxSeqLength: number;
  /** Fewest train examples an ARC prompt may keep when dropping for length. Default 1. */
  minTrainExamples: number;
  /** A text task longer than `maxSeqLength`: `skip` it (default) or `truncate` it (recorded). */
  textOverflow: 'skip' | 'truncate';
  /** The ARC prompt template (`loadPromptTemplate()`). */
  template: PromptTemplate;
  /** Keep the rendered prompt text on each sample (for debugging and golden tests). Default false. */
  keepPromptText: boolean;
  /** Find each ARC sample's `answerStart` (for `--positions answer`). Default false. */
  findAnswerStart: boolean;
}

/** One prompt: a (task, test input, augmentation) triple and its token ids. */
export interface Sample {
  /** `TASKINDEX.TESTINDEX.AUGINDEX`, unique within a dataset and run (e.g. `1234.0.7`). */
  sampleId: string;
  /** The task's global index in the dataset. */
  taskIndex: number;
  /** The task's `task_id` (or `id`), else `task_` + 16 hex digits of its content hash. */
  taskId: string;
  /** `arc` or `text`. */
  kind: 'arc' | 'text';
  /** Which test input (0 for text). */
  testIndex: number;
  /** What was applied (null for text tasks). */
  augmentation: Augmentation | null;
  /** Token ids of the prompt, no padding. */
  tokenIds: Int32Array;
  /** Train examples the task has (null for text). */
  trainExamplesTotal: number | null;
  /** Train examples shown in the prompt, the first ones of `augmentation.trainOrder` (null for text). */
  trainExamplesUsed: number | null;
  /** True when a text task was cut to `maxSeqLength` (`textOverflow: 'truncate'`). */
  truncated: boolean;
  /** SHA-256 (hex) of the prompt text as rendered, before tokenization. */
  promptSha256: string;
  /** The prompt text, only with `keepPromptText`. */
  promptText?: string;
  /**
   * ARC, with `findAnswerStart`: the position of the first token of the fence that opens the
   * answer grid (`--positions answer`); null when it cannot be told apart. Text: absent.
   */
  answerStart?: number | null;
}

/** A task, or one sample of it, that produced no activations. */
export interface SkippedSample {
  /** The task's global index. */
  taskIndex: number;
  /** The task's id when known. */
  taskId: string | null;
  /** The test input concerned, or null when the whole task was skipped. */
  testIndex: number | null;
  /** The augmentation concerned, or null when the whole task (or test input) was skipped. */
  augmentationIndex: number | null;
  /** Machine-readable reason. */
  reason: SkipReason;
  /** Human-readable detail. */
  detail: string;
}

/** What `buildSamples` returns. */
export interface SampleBatchResult {
  /** Samples in order: test index, then augmentation index. */
  samples: Sample[];
  /** What was skipped, with reasons. */
  skipped: SkippedSample[];
}

/** Default `predictionsPerTask`. */
export const DEFAULT_PREDICTIONS_PER_TASK = 8;
/** Default `maxSeqLength`. */
export const DEFAULT_MAX_SEQ_LENGTH = 2048;

/** Fills defaults and validates; bad values fail with `INVALID_ARGUMENT` naming the option. */
export function resolveSampleOptions(
  options: Partial<SampleOptions> & Pick<SampleOptions, 'template'>,
): SampleOptions {
  const resolved: SampleOptions = {
    predictionsPerTask: options.predictionsPerTask ?? DEFAULT_PREDICTIONS_PER_TASK,
    augment: options.augment ?? true,
    seed: options.seed ?? 0,
    maxSeqLength: options.maxSeqLength ?? DEFAULT_MAX_SEQ_LENGTH,
    minTrainExamples: options.minTrainExamples ?? 1,
    textOverflow: options.textOverflow ?? 'skip',
    template: options.template,
    keepPromptText: options.keepPromptText ?? false,
    findAnswerStart: options.findAnswerStart ?? false,
  };
  const positiveInt = (name: string, v: number): void => {
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new ConfigError(`${name} must be a positive integer, got ${v}`);
    }
  };
  positiveInt('predictions_per_task', resolved.predictionsPerTask);
  positiveInt('max_seq_length', resolved.maxSeqLength);
  if (!Number.isSafeInteger(resolved.minTrainExamples) || resolved.minTrainExamples < 0) {
    throw new ConfigError(
      `min_train_examples must be a non-negative integer, got ${resolved.minTrainExamples}`,
    );
  }
  if (resolved.textOverflow !== 'skip' && resolved.textOverflow !== 'truncate') {
    throw new ConfigError(
      `text_overflow must be "skip" or "truncate", got ${String(resolved.textOverflow)}`,
    );
  }
  return resolved;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The rendered prompt text of an ARC test input under an augmentation, showing `nTrain` examples. */
export function renderArcPrompt(
  task: ArcTask,
  testIndex: number,
  augmentation: Augmentation,
  nTrain: number,
  template: PromptTemplate,
  tokenizer: Pick<PromptTokenizer, 'renderOpenChat'>,
): string {
  const train: TemplateExample[] = augmentation.trainOrder.slice(0, nTrain).map((orig, k) => {
    const pair = task.train[orig]!;
    return {
      number: k + 1,
      input: encodeGrid(transformGrid(pair.input, augmentation)),
      output: encodeGrid(transformGrid(pair.output, augmentation)),
    };
  });
  const testInput = encodeGrid(transformGrid(task.test[testIndex]!, augmentation));
  const messages = renderPromptMessages(template, {
    train,
    test_input: testInput,
    n_train: train.length,
  });
  return tokenizer.renderOpenChat(messages);
}

interface Fitted {
  text: string;
  ids: number[];
  used: number;
}

/**
 * The prompt with the most train examples (from the front of the augmented order) that fits
 * in `maxSeqLength` tokens, or null when even `minTrainExamples` does not fit. Token counts
 * grow with the number of examples, so a binary search needs ≈log2(n) tokenizations.
 */
function fitArcPrompt(
  task: ArcTask,
  testIndex: number,
  aug: Augmentation,
  options: SampleOptions,
  tokenizer: PromptTokenizer,
): Fitted | { tooLong: number } {
  const attempt = (k: number): Fitted => {
    const text = renderArcPrompt(task, testIndex, aug, k, options.template, tokenizer);
    return { text, ids: tokenizer.encode(text, { addSpecialTokens: false }), used: k };
  };
  const n = task.train.length;
  const full = attempt(n);
  if (full.ids.length <= options.maxSeqLength) return full;
  const min = Math.min(options.minTrainExamples, n);
  if (min >= n) return { tooLong: full.ids.length };
  let best: Fitted | null = null;
  let lo = min;
  let hi = n - 1;
  let shortest = full.ids.length;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const candidate = attempt(mid);
    if (candidate.ids.length <= options.maxSeqLength) {
      best = candidate;
      lo = mid + 1;
    } else {
      shortest = Math.min(shortest, candidate.ids.length);
      hi = mid - 1;
    }
  }
  return best ?? { tooLong: shortest };
}

/** What opens the answer grid at the end of an ARC prompt (the template's "```grid"). */
const ANSWER_FENCE = '```';

/**
 * The token position where the answer grid opens: the first token of the prompt's last
 * fence. Found by tokenizing the text before it: when that is a prefix of the prompt's tokens
 * (a token boundary falls right before the fence, as it does for the Qwen tokenizer, where
 * newlines and backticks never merge), its length is the position; else null.
 */
export function answerStartOf(
  text: string,
  ids: readonly number[],
  tokenizer: PromptTokenizer,
): number | null {
  const at = text.lastIndexOf(ANSWER_FENCE);
  if (at < 0) return null;
  const prefix = tokenizer.encode(text.slice(0, at), { addSpecialTokens: false });
  if (prefix.length >= ids.length) return null;
  for (let i = 0; i < prefix.length; i++) if (prefix[i] !== ids[i]) return null;
  return prefix.length;
}

/**
 * One task's samples: for ARC, one per (test input × augmentation); for text, one.
 * `task` is the parsed JSON line (anything); `taskIndex` its global index.
 */
export function buildSamples(
  task: unknown,
  taskIndex: number,
  options: SampleOptions,
  tokenizer: PromptTokenizer,
): SampleBatchResult {
  const parsed = parseTask(task);
  const samples: Sample[] = [];
  const skipped: SkippedSample[] = [];

  if (parsed.kind === 'invalid') {
    skipped.push({
      taskIndex,
      taskId: parsed.taskId,
      testIndex: null,
      augmentationIndex: null,
      reason: parsed.reason,
      detail: parsed.detail,
    });
    return { samples, skipped };
  }

  if (parsed.kind === 'text') {
    let ids = tokenizer.encode(parsed.text, { addSpecialTokens: true });
    let truncated = false;
    if (ids.length > options.maxSeqLength) {
      if (options.textOverflow === 'skip') {
        skipped.push({
          taskIndex,
          taskId: parsed.taskId,
          testIndex: 0,
          augmentationIndex: null,
          reason: 'too_long',
          detail: `${ids.length} tokens > max_seq_length ${options.maxSeqLength}`,
        });
        return { samples, skipped };
      }
      ids = ids.slice(0, options.maxSeqLength);
      truncated = true;
    }
    samples.push({
      sampleId: `${taskIndex}.0.0`,
      taskIndex,
      taskId: parsed.taskId,
      kind: 'text',
      testIndex: 0,
      augmentation: null,
      tokenIds: Int32Array.from(ids),
      trainExamplesTotal: null,
      trainExamplesUsed: null,
      truncated,
      promptSha256: sha256(parsed.text),
      ...(options.keepPromptText ? { promptText: parsed.text } : {}),
    });
    return { samples, skipped };
  }

  const nAug = options.augment ? options.predictionsPerTask : 1;
  for (let t = 0; t < parsed.test.length; t++) {
    for (let a = 0; a < nAug; a++) {
      const aug = options.augment
        ? augmentationFor(options.seed, parsed.taskKey, a, parsed.train.length)
        : identityAugmentation(parsed.train.length);
      const fitted = fitArcPrompt(parsed, t, aug, options, tokenizer);
      if ('tooLong' in fitted) {
        skipped.push({
          taskIndex,
          taskId: parsed.taskId,
          testIndex: t,
          augmentationIndex: a,
          reason: 'too_long',
          detail:
            `${fitted.tooLong} tokens with ${Math.min(options.minTrainExamples, parsed.train.length)}` +
            ` train example(s) > max_seq_length ${options.maxSeqLength}`,
        });
        continue;
      }
      samples.push({
        sampleId: `${taskIndex}.${t}.${a}`,
        taskIndex,
        taskId: parsed.taskId,
        kind: 'arc',
        testIndex: t,
        augmentation: aug,
        tokenIds: Int32Array.from(fitted.ids),
        trainExamplesTotal: parsed.train.length,
        trainExamplesUsed: fitted.used,
        truncated: false,
        promptSha256: sha256(fitted.text),
        ...(options.keepPromptText ? { promptText: fitted.text } : {}),
        ...(options.findAnswerStart
          ? { answerStart: answerStartOf(fitted.text, fitted.ids, tokenizer) }
          : {}),
      });
    }
  }
  return { samples, skipped };
}
