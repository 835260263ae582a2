/**
 * The ARC prompt template: a user-replaceable text file with `=== system ===`,
 * `=== user ===` and `=== assistant ===` sections, each a Jinja template. The default,
 * `templates/arc-default.prompt`, is shardline's own wording around the original's prompt
 * structure (docs/notes/original-system.md §4.3); its header documents the format and variables.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Template } from '@huggingface/jinja';

import { ConfigError, ShardlineError, toError } from '../../core/errors';

/** A chat message as chat templates take it. */
export interface ChatMessage {
  /** `system`, `user` or `assistant`. */
  role: 'system' | 'user' | 'assistant';
  /** The message text. */
  content: string;
}

/** A parsed, compiled prompt template. */
export interface PromptTemplate {
  /** Where it came from (a path, or a name given by the caller). */
  source: string;
  /** SHA-256 (hex) of the file's bytes; recorded in every part. */
  sha256: string;
  /** The system section, or null when the file has none. */
  system: Template | null;
  /** The user section. */
  user: Template;
  /** The assistant section: the text the prompt ends with (the answer's opening). */
  assistant: Template;
}

/** One train example as the template sees it. */
export interface TemplateExample {
  /** 1-based position in the prompt. */
  number: number;
  /** The encoded input grid. */
  input: string;
  /** The encoded output grid. */
  output: string;
}

/** Variables a template is rendered with. */
export interface TemplateVariables {
  /** Train examples in prompt order. */
  train: TemplateExample[];
  /** The encoded test input grid. */
  test_input: string;
  /** `train.length`. */
  n_train: number;
}

/** File name of the default ARC template in `templates/`. */
export const DEFAULT_ARC_TEMPLATE = 'arc-default.prompt';

/**
 * The path of a file shipped in `worker/extraction/templates/`. Works from the sources and
 * from a compiled tree (`dist/worker/extraction/`, which `tsc` does not copy templates into):
 * the nearest `worker/extraction/templates/NAME` above this module is used.
 */
export function bundledTemplatePath(name: string): string {
  const local = path.join(__dirname, 'templates', name);
  if (existsSync(local)) return local;
  const rel = path.join('worker', 'extraction', 'templates', name);
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, rel))) return path.join(dir, rel);
  }
  throw new ShardlineError('NOT_FOUND', `bundled template ${name} not found above ${__dirname}`);
}

const MARKER = /^=== (system|user|assistant) ===[ \t]*$/;

function compile(body: string, section: string, source: string): Template {
  try {
    return new Template(body);
  } catch (e: unknown) {
    throw new ConfigError(
      `prompt template ${source}: section "${section}" is not valid Jinja: ${toError(e).message}`,
    );
  }
}

/**
 * Parses template text. Lines before the first marker are a comment; a marker is a line
 * `=== NAME ===`; blank lines at the end of a section are dropped. `user` and `assistant`
 * are required, `system` is optional. Fails with `INVALID_ARGUMENT` naming `source`.
 */
export function parsePromptTemplate(text: string, source: string): PromptTemplate {
  const sections = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of text.replace(/\r\n/g, '\n').split('\n')) {
    const m = MARKER.exec(line);
    if (m) {
      const name = m[1]!;
      if (sections.has(name)) {
        throw new ConfigError(`prompt template ${source}: section "${name}" appears twice`);
      }
      current = [];
      sections.set(name, current);
    } else if (current) {
      current.push(line);
    }
  }
  const body = (name: string): string | null => {
    const lines = sections.get(name);
    return lines ? lines.join('\n').replace(/\s+$/, '') : null;
  };
  const user = body('user');
  const assistant = body('assistant');
  if (user === null || assistant === null) {
    throw new ConfigError(
      `prompt template ${source} needs "=== user ===" and "=== assistant ===" sections`,
    );
  }
  const system = body('system');
  return {
    source,
    sha256: createHash('sha256').update(text).digest('hex'),
    system: system === null ? null : compile(system, 'system', source),
    user: compile(user, 'user', source),
    assistant: compile(assistant, 'assistant', source),
  };
}

/** Reads and parses a template file; without a path, the bundled default. */
export function loadPromptTemplate(file?: string): PromptTemplate {
  const p = file ?? bundledTemplatePath(DEFAULT_ARC_TEMPLATE);
  let text: string;
  try {
    text = readFileSync(p, 'utf8');
  } catch (e: unknown) {
    throw new ConfigError(`cannot read prompt template ${p}: ${toError(e).message}`);
  }
  return parsePromptTemplate(text, p);
}

/** Renders the template into chat messages: [system?], user, assistant (the answer opening). */
export function renderPromptMessages(
  template: PromptTemplate,
  vars: TemplateVariables,
): ChatMessage[] {
  const ctx = vars as unknown as Record<string, unknown>;
  const messages: ChatMessage[] = [];
  if (template.system) messages.push({ role: 'system', content: template.system.render(ctx) });
  messages.push({ role: 'user', content: template.user.render(ctx) });
  messages.push({ role: 'assistant', content: template.assistant.render(ctx) });
  return messages;
}
