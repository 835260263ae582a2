/**
 * Reading one task line (already JSON-parsed, so `unknown`) into a validated ARC or text
 * task, or a reason why it cannot be used. Never throws on bad input: a malformed task is
 * recorded as skipped, not a crashed run (issue 5).
 */
import { createHash } from 'node:crypto';

import type { Grid } from './grid';

/** Why a task (or one of its samples) produced no activations. */
export type SkipReason =
  /** The line is not a JSON object. */
  | 'not_an_object'
  /** Neither ARC (`train`/`test`) nor text (`text`). */
  | 'unknown_kind'
  /** A grid is not a non-empty rectangle of integers 0-9. */
  | 'invalid_grid'
  /** `train` is missing, not an array, empty, or a pair lacks `input`/`output`. */
  | 'invalid_train'
  /** `test` is missing, not an array, empty, or an entry lacks `input`. */
  | 'no_test_input'
  /** `text` is empty. */
  | 'empty_text'
  /** The prompt exceeds `max_seq_length` even after dropping train examples. */
  | 'too_long';

/** One train pair of a validated ARC task. */
export interface ArcPair {
  /** The input grid. */
  input: Grid;
  /** The output grid. */
  output: Grid;
}

/** A validated ARC task. */
export interface ArcTask {
  /** Discriminant. */
  kind: 'arc';
  /** The task's own `task_id` (or `id`), else `task_` + 16 hex digits of `taskKey`. */
  taskId: string;
  /** SHA-256 (hex) of the task's canonical content: its identity for seeding. */
  taskKey: string;
  /** Train pairs, in input order (at least one). */
  train: ArcPair[];
  /** Test inputs, in input order (at least one); any test outputs are ignored. */
  test: Grid[];
}

/** A validated text task. */
export interface TextTask {
  /** Discriminant. */
  kind: 'text';
  /** The task's own `task_id` (or `id`), else `task_` + 16 hex digits of `taskKey`. */
  taskId: string;
  /** SHA-256 (hex) of the text. */
  taskKey: string;
  /** The text, used as it is. */
  text: string;
}

/** A task that cannot be used, with the reason. */
export interface InvalidTask {
  /** Discriminant. */
  kind: 'invalid';
  /** The task's own id when it has one, else null. */
  taskId: string | null;
  /** Machine-readable reason. */
  reason: SkipReason;
  /** Human-readable detail (which grid, which row). */
  detail: string;
}

/** What `parseTask` returns. */
export type ParsedTask = ArcTask | TextTask | InvalidTask;

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function ownId(task: Record<string, unknown>): string | null {
  for (const key of ['task_id', 'id']) {
    const v = task[key];
    if (typeof v === 'string' && v !== '') return v;
    if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v);
  }
  return null;
}

/** Checks a grid; returns a problem description or null when it is valid. */
export function gridProblem(value: unknown): string | null {
  if (!Array.isArray(value)) return 'is not an array of rows';
  if (value.length === 0) return 'has no rows';
  let width = -1;
  for (let r = 0; r < value.length; r++) {
    const row: unknown = value[r];
    if (!Array.isArray(row)) return `row ${r} is not an array`;
    if (row.length === 0) return `row ${r} is empty`;
    if (width === -1) width = row.length;
    else if (row.length !== width)
      return `is ragged (row 0 has ${width} cells, row ${r} has ${row.length})`;
    for (let c = 0; c < row.length; c++) {
      const v: unknown = row[c];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 9) {
        return `has ${JSON.stringify(v) ?? String(v)} at row ${r}, column ${c} (colours are integers 0-9)`;
      }
    }
  }
  return null;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/**
 * Validates one task. ARC when it has `train` or `test`; text when it has a string `text`;
 * anything else is invalid with a reason. `task_id` (or `id`) is kept when present.
 */
export function parseTask(raw: unknown): ParsedTask {
  if (!isObject(raw)) {
    return { kind: 'invalid', taskId: null, reason: 'not_an_object', detail: 'not a JSON object' };
  }
  const id = ownId(raw);
  const invalid = (reason: SkipReason, detail: string): InvalidTask => ({
    kind: 'invalid',
    taskId: id,
    reason,
    detail,
  });

  if ('train' in raw || 'test' in raw) {
    const train = raw['train'];
    if (!Array.isArray(train) || train.length === 0) {
      return invalid('invalid_train', '"train" must be a non-empty array of {input, output}');
    }
    const pairs: ArcPair[] = [];
    for (let i = 0; i < train.length; i++) {
      const pair: unknown = train[i];
      if (!isObject(pair) || !('input' in pair) || !('output' in pair)) {
        return invalid('invalid_train', `train[${i}] is not an {input, output} pair`);
      }
      for (const side of ['input', 'output'] as const) {
        const problem = gridProblem(pair[side]);
        if (problem) return invalid('invalid_grid', `train[${i}].${side} ${problem}`);
      }
      pairs.push({ input: pair['input'] as Grid, output: pair['output'] as Grid });
    }
    const test = raw['test'];
    if (!Array.isArray(test) || test.length === 0) {
      return invalid('no_test_input', '"test" must be a non-empty array of {input}');
    }
    const inputs: Grid[] = [];
    for (let i = 0; i < test.length; i++) {
      const entry: unknown = test[i];
      if (!isObject(entry) || !('input' in entry)) {
        return invalid('no_test_input', `test[${i}] has no "input"`);
      }
      const problem = gridProblem(entry['input']);
      if (problem) return invalid('invalid_grid', `test[${i}].input ${problem}`);
      inputs.push(entry['input'] as Grid);
    }
    const taskKey = sha256(
      JSON.stringify({ train: pairs.map((p) => [p.input, p.output]), test: inputs }),
    );
    return {
      kind: 'arc',
      taskId: id ?? `task_${taskKey.slice(0, 16)}`,
      taskKey,
      train: pairs,
      test: inputs,
    };
  }

  if (typeof raw['text'] === 'string') {
    const text = raw['text'];
    if (text === '') return invalid('empty_text', '"text" is empty');
    const taskKey = sha256(`text\u0000${text}`);
    return { kind: 'text', taskId: id ?? `task_${taskKey.slice(0, 16)}`, taskKey, text };
  }
  return invalid('unknown_kind', 'neither an ARC task ("train"/"test") nor a text task ("text")');
}
