/**
 * Browser checks in the jest suite: the report opened in a real headless Chromium (Debian's
 * `chromium`, driven by playwright-core), in a fresh profile, with every request that is not a
 * file of the page refused, so a test can never reach the network.
 *
 * - Chromium present: the test runs.
 * - Missing, and SHARDLINE_REQUIRE_CHROMIUM unset: the test is declared as a skip whose name
 *   says what is missing, and a warning is printed (a developer's machine: never a silent pass).
 * - Missing, and SHARDLINE_REQUIRE_CHROMIUM=1 (.ci/run sets it): the test fails, naming what is
 *   missing. The same switch as SHARDLINE_REQUIRE_PYTHON (test/support/python.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { chromium } from 'playwright-core';
import type { Page } from 'playwright-core';

/** The browser: Debian's package, or SHARDLINE_CHROMIUM. */
export const CHROMIUM = process.env.SHARDLINE_CHROMIUM ?? '/usr/bin/chromium';

/** The flags of every launch: headless, no sandbox (CI runs as root), nothing that calls home. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Why Chromium cannot run here, or null when it can. */
export function chromiumMissing(): string | null {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is not installed`;
  const r = spawnSync(CHROMIUM, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0)
    return `${CHROMIUM} --version failed (${(r.stderr || String(r.status)).trim()})`;
  return null;
}

/** True when SHARDLINE_REQUIRE_CHROMIUM is set to anything but empty, `0` or `false`. */
export function chromiumRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  return !['', '0', 'false'].includes(env.SHARDLINE_REQUIRE_CHROMIUM ?? '');
}

/** Declares a jest test that needs Chromium (see the file comment for when it is missing). */
export function chromiumTest(name: string, fn: () => Promise<void>, timeoutMs?: number): void {
  const missing = chromiumMissing();
  if (missing === null) test(name, fn, timeoutMs);
  else if (chromiumRequired())
    test(name, () => {
      throw new Error(
        `SHARDLINE_REQUIRE_CHROMIUM is set but ${missing}: install it (Debian: apt-get install chromium)`,
      );
    });
  else {
    console.warn(
      `${missing}: skipping "${name}" (apt-get install chromium; set SHARDLINE_REQUIRE_CHROMIUM=1 to make this a failure)`,
    );
    test.skip(`${name} (skipped: ${missing})`, () => undefined);
  }
}

/** What happened while a page was open. */
export interface PageProblems {
  /** Console messages of type error or warning. */
  console: string[];
  /** Uncaught exceptions. */
  pageErrors: string[];
  /** Requests for anything but the page's own file (refused). */
  requests: string[];
}

/**
 * Opens `file` in a fresh headless Chromium profile and runs `fn` on the loaded page; returns
 * what `fn` returned and what went wrong while the page was open.
 */
export async function withPage<T>(
  file: string,
  fn: (page: Page) => Promise<T>,
): Promise<{ result: T; problems: PageProblems }> {
  const profile = mkdtempSync(path.join(tmpdir(), 'shardline-chromium-'));
  const problems: PageProblems = { console: [], pageErrors: [], requests: [] };
  const url = `file://${path.resolve(file)}`;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1240, height: 900 },
  });
  try {
    await context.route('**/*', (route) => {
      const u = route.request().url();
      if (u === url) return route.continue();
      problems.requests.push(u);
      return route.abort();
    });
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.console.push(m.text());
    });
    page.on('pageerror', (e) => problems.pageErrors.push(e.message));
    await page.goto(url, { waitUntil: 'load' });
    const result = await fn(page);
    return { result, problems };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
