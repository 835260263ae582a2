/**
 * The tokenizer and sample options a run builds its prompts with, from the user's paths and
 * settings: what `shardline work` loads before it claims anything, and what `shardline plan`
 * tokenizes its sample with, so the two can never build different prompts.
 */
import { existsSync, statSync } from 'node:fs';
import * as path from 'node:path';

import type { ActivationDtype } from './activations';
import type { PositionSpec } from './positions';
import { loadPromptTemplate } from './prompt-template';
import type { SampleOptions } from './samples';
import { resolveSampleOptions } from './samples';
import type { PromptTokenizer } from './tokenizer';
import { loadTokenizer } from './tokenizer';

/** What decides the prompts of a run (paths relative to the caller's folder). */
export interface PromptSettings {
  /**
   * The model file or checkpoint folder; its folder (or the one above, for `onnx/model.onnx`)
   * may hold the tokenizer.
   */
  modelPath?: string;
  tokenizerPath?: string;
  tokenizerConfigPath?: string;
  chatTemplatePath?: string;
  /** The ARC instruction template; default the bundled one. */
  promptTemplatePath?: string;
  predictionsPerTask: number;
  augment: boolean;
  seed: number;
  maxSeqLength: number;
  /** The stored positions; `answer` makes the samples find where the answer grid opens. */
  positions?: PositionSpec;
}

/**
 * What a run is told about its model, prompts and outputs, in the words `work` and `plan`
 * share (cli/extraction-flags.ts sets them from the same flags).
 */
export interface ExtractionChoices extends PromptSettings {
  /** Model name recorded in the parts (default: the model folder's name). */
  modelName?: string;
  /** Layers to extract; undefined = all. */
  layers?: number[];
  /** Which token positions are stored (`--positions`). */
  positions: PositionSpec;
  dtype: ActivationDtype;
  batchSize: number;
  maxBatchTokens: number;
  threads?: number;
  executionProviders: string[];
  partSizeBytes: number;
}

/** The tokenizer and the sample options built from `PromptSettings`. */
export interface PromptSetup {
  tokenizer: PromptTokenizer;
  sampleOptions: SampleOptions;
}

/**
 * Finds the tokenizer files of a Hugging Face style model folder (`onnx/model.onnx` or
 * `model.onnx`, or a checkpoint folder itself): `tokenizer.json` beside the model or one folder
 * up, with its `tokenizer_config.json` when there is one. Null when there is none.
 */
export function tokenizerBeside(
  modelPath: string,
): { tokenizerPath: string; tokenizerConfigPath?: string } | null {
  const dirs =
    existsSync(modelPath) && statSync(modelPath).isDirectory()
      ? [modelPath, path.dirname(modelPath)]
      : [path.dirname(modelPath), path.dirname(path.dirname(modelPath))];
  for (const dir of dirs) {
    const tok = path.join(dir, 'tokenizer.json');
    if (existsSync(tok)) {
      const cfg = path.join(dir, 'tokenizer_config.json');
      return { tokenizerPath: tok, ...(existsSync(cfg) ? { tokenizerConfigPath: cfg } : {}) };
    }
  }
  return null;
}

/**
 * Loads the tokenizer (the given path, else the model folder's, else the bundled Qwen
 * tokenizer) and the prompt template, and resolves the sample options. Fails with
 * `INVALID_ARGUMENT` naming a file that is missing or invalid.
 */
export function loadPromptSetup(settings: PromptSettings, cwd: string): PromptSetup {
  const at = (p: string): string => path.resolve(cwd, p);
  const beside =
    settings.tokenizerPath || !settings.modelPath ? null : tokenizerBeside(at(settings.modelPath));
  const tokenizer = loadTokenizer({
    ...(settings.tokenizerPath ? { tokenizerPath: at(settings.tokenizerPath) } : (beside ?? {})),
    ...(settings.tokenizerConfigPath
      ? { tokenizerConfigPath: at(settings.tokenizerConfigPath) }
      : {}),
    ...(settings.chatTemplatePath ? { chatTemplatePath: at(settings.chatTemplatePath) } : {}),
  });
  const sampleOptions = resolveSampleOptions({
    template: loadPromptTemplate(
      settings.promptTemplatePath ? at(settings.promptTemplatePath) : undefined,
    ),
    predictionsPerTask: settings.predictionsPerTask,
    augment: settings.augment,
    seed: settings.seed,
    maxSeqLength: settings.maxSeqLength,
    findAnswerStart: settings.positions?.kind === 'answer',
  });
  return { tokenizer, sampleOptions };
}
