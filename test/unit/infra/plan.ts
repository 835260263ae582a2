/**
 * Runs the infra/ scripts in --dry-run mode and reads the plans they print (see
 * infra/lib/common.sh for the line forms). Shared by the infra unit tests.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** The repository root. */
export const ROOT = path.resolve(__dirname, '../../..');

/** One command of a plan, as words (quotes removed, deferred `${NAME}` kept literally). */
export interface PlanCommand {
  words: string[];
  /** The existence check that guards a create (`PROBE || CREATE`) or a delete (`if PROBE`). */
  guard?: string[];
  /** For a lookup line `NAME="$(...)"`: NAME. */
  assigns?: string;
  /** The printed line it came from. */
  line: string;
}

/** The outcome of running a script. */
export interface ScriptRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Commands the script tried to run through the fake gcloud/curl/docker/gsutil. */
  cloudCalls: string[];
}

const FAKE_TOOLS = ['gcloud', 'gsutil', 'curl', 'docker', 'firebase'];

/**
 * Runs `bash SCRIPT ARGS` from the repository root with an environment holding no SHARDLINE_*
 * settings other than `env`, and with fake cloud tools first on PATH: each records its call and
 * fails, so a dry run that calls one is caught.
 */
export function runScript(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): ScriptRun {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardline-infra-'));
  try {
    const log = path.join(dir, 'calls.log');
    for (const tool of FAKE_TOOLS) {
      const file = path.join(dir, tool);
      writeFileSync(file, `#!/bin/sh\necho "${tool} $*" >>"${log}"\nexit 97\n`);
      chmodSync(file, 0o755);
    }
    const base: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && !k.startsWith('SHARDLINE_') && !k.startsWith('CLOUDSDK_')) base[k] = v;
    }
    const result = spawnSync('bash', [script, ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...base, PATH: `${dir}:${process.env.PATH ?? ''}`, ...env },
      timeout: 60_000,
    });
    return {
      status: result.status,
      stdout: result.stdout,
      stderr: result.stderr,
      cloudCalls: existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : [],
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Splits one printed command into words: bare words, '...' (with '\''), "..." (with \x). */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < text.length) {
    while (text[i] === ' ') i++;
    if (i >= text.length) break;
    let word = '';
    while (i < text.length && text[i] !== ' ') {
      const c = text[i]!;
      if (c === "'") {
        const end = text.indexOf("'", i + 1);
        if (end < 0) throw new Error(`unterminated ' in: ${text}`);
        word += text.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          word += text[i];
          i++;
        }
        if (text[i] !== '"') throw new Error(`unterminated " in: ${text}`);
        i++;
      } else if (c === '\\' && i + 1 < text.length) {
        word += text[i + 1];
        i += 2;
      } else {
        word += c;
        i++;
      }
    }
    words.push(word);
  }
  return words;
}

const GUARDED = / >\/dev\/null 2>&1 \|\| /;
const REMOVAL = /^if (.*) >\/dev\/null 2>&1; then (.*); fi$/;
const LOOKUP = /^([A-Z_]+)="\$\((.*)\)"$/;

/** The commands of a printed plan, in order (comments and the bash preamble skipped). */
export function parsePlan(stdout: string): PlanCommand[] {
  const commands: PlanCommand[] = [];
  for (const line of stdout.split('\n')) {
    if (line === '' || line.startsWith('#') || line === 'set -euo pipefail') continue;
    const lookup = LOOKUP.exec(line);
    const removal = REMOVAL.exec(line);
    if (lookup) {
      commands.push({ words: shellWords(lookup[2]!), assigns: lookup[1]!, line });
    } else if (removal) {
      commands.push({ words: shellWords(removal[2]!), guard: shellWords(removal[1]!), line });
    } else if (GUARDED.test(line)) {
      const [probe, create] = line.split(GUARDED) as [string, string];
      commands.push({ words: shellWords(create), guard: shellWords(probe), line });
    } else if (line.endsWith(' || true')) {
      commands.push({ words: shellWords(line.slice(0, -' || true'.length)), line });
    } else {
      commands.push({ words: shellWords(line), line });
    }
  }
  return commands;
}

/** The value of `--NAME=VALUE` in a command, or undefined. */
export function flag(command: PlanCommand, name: string): string | undefined {
  const prefix = `--${name}=`;
  return command.words.find((w) => w.startsWith(prefix))?.slice(prefix.length);
}

/** Every value of a repeated `--NAME=VALUE`. */
export function flags(command: PlanCommand, name: string): string[] {
  const prefix = `--${name}=`;
  return command.words.filter((w) => w.startsWith(prefix)).map((w) => w.slice(prefix.length));
}

/** Whether the command starts with these words (`gcloud pubsub topics create`). */
export function startsWith(command: PlanCommand, ...words: string[]): boolean {
  return words.every((w, i) => command.words[i] === w);
}
