/**
 * Every file a comment, a script or a document cites exists in the repository, and every
 * `#anchor` into a Markdown file names one of its headings: a maintainer who clones the project
 * can follow every reference. (The design once lived outside the repository, and code cited it
 * 34 times.)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TEXT =
  /\.(ts|js|mjs|md|sh|py|ya?ml|json|toml|rules|prompt|jinja)$|(^|\/)Dockerfile$|^\.ci\/run$/;

const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter(
    (f) => f !== '' && TEXT.test(f) && f !== 'package-lock.json' && existsSync(path.join(ROOT, f)),
  );

/** Top-level folders whose files are cited by path. */
const FOLDERS = 'docs|core|cli|worker|functions|synthetic|bench|test|infra|examples|native';
const PATH_REF = new RegExp(
  String.raw`(?<![\w.\-/@])((?:\.\.?/)*(?:${FOLDERS})/[\w.\-/]*[\w-]\.(?:ts|md|sh|py|json|ya?ml|toml|rules|prompt|jinja|mjs|js|txt))(#[\w-]+)?`,
  'g',
);
const MD_LINK = /\]\(([^)\s]+?)\)/g;

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[`*_]/g, '')
    .replace(/[^\p{L}\p{N}\s-]/gu, '')
    .replace(/\s/g, '-');
}

function anchorsIn(file: string): Set<string> {
  const anchors = new Set<string>();
  let inFence = false;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^```/.test(line)) inFence = !inFence;
    const m = !inFence && /^#{1,6}\s+(.*)$/.exec(line);
    if (m) anchors.add(anchorOf(m[1]!));
  }
  return anchors;
}

/** Where a cited path can be: from the repository's root, or from the citing file's folder. */
function resolve(from: string, ref: string): string | null {
  for (const base of [ROOT, path.join(ROOT, path.dirname(from))]) {
    const p = path.resolve(base, ref);
    if (p.startsWith(ROOT) && existsSync(p)) return p;
  }
  return null;
}

interface Problem {
  at: string;
  ref: string;
  why: string;
}

function check(from: string, ref: string, anchor: string | undefined, problems: Problem[]): void {
  // Paths inside generated or per-run places are not files of the repository.
  if (/^(\.\.\/)*(bench\/out|test\/unit\/lint\/fixtures)\//.test(ref)) return;
  // A compiled module's path (main.js, from a folder of dist/) stands for its source (main.ts).
  const target =
    resolve(from, ref) ?? (ref.endsWith('.js') ? resolve(from, ref.replace(/\.js$/, '.ts')) : null);
  if (!target) return void problems.push({ at: from, ref, why: 'no such file' });
  if (anchor && target.endsWith('.md') && !anchorsIn(target).has(anchor.slice(1)))
    problems.push({ at: from, ref: `${ref}${anchor}`, why: 'no such heading' });
}

test('every cited path and anchor exists', () => {
  const problems: Problem[] = [];
  let refs = 0;
  for (const file of tracked) {
    const text = readFileSync(path.join(ROOT, file), 'utf8');
    for (const m of text.matchAll(PATH_REF)) {
      refs++;
      check(file, m[1]!, m[2], problems);
    }
    if (file.endsWith('.md')) {
      for (const m of text.matchAll(MD_LINK)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue; // a URL
        refs++;
        const [p, a] = target.split('#') as [string, string | undefined];
        if (p === '') {
          if (a && !anchorsIn(path.join(ROOT, file)).has(a))
            problems.push({ at: file, ref: target, why: 'no such heading' });
        } else check(file, p, a === undefined ? undefined : `#${a}`, problems);
      }
    }
  }
  // The check reads hundreds of references; a pattern that matched nothing would pass vacuously.
  expect(refs).toBeGreaterThan(200);
  expect(problems).toEqual([]);
});

test('no reference to the design files that live outside the repository', () => {
  const outside =
    /(?<!docs\/)\bnotes\/(onnx|emulators|original-system)\.md|\bDESIGN\.md|\bCONVENTIONS\.md|core\/glossary\.md/;
  // Inside docs/, `notes/onnx.md` is a relative link to docs/notes/ (checked above).
  const found = tracked
    .filter((f) => f !== 'test/unit/docs/references.test.ts' && !f.startsWith('docs/'))
    .flatMap((f) =>
      readFileSync(path.join(ROOT, f), 'utf8')
        .split('\n')
        .map((line, i) => ({ at: `${f}:${i + 1}`, line }))
        .filter(({ line }) => outside.test(line)),
    );
  expect(found).toEqual([]);
});
