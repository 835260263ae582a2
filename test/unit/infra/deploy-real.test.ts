/**
 * infra/deploy.sh for real, against fake gcloud and curl that play a project: an empty one,
 * then one where everything already exists. In the empty project the script runs exactly the
 * commands its dry run printed, in order; in the deployed one it creates nothing, releases no
 * rules, and only repeats the calls that set a value to what it already is.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { ROOT, parsePlan, runScript } from './plan';

const PROJECT = 'demo-infra-real';
const NUMBER = '123456789012';
const { dir, cleanup } = makeTempDir('deploy-real');
afterAll(cleanup);

/** The values the fake project answers lookups with (the same rules as the fake gcloud). */
function lookupValue(words: string[]): string {
  const cmd = words.slice(0, 3).join(' ');
  if (cmd === 'gcloud projects describe') return NUMBER;
  if (cmd === 'gcloud storage service-agent')
    return `service-${NUMBER}@gs-project-accounts.iam.gserviceaccount.com`;
  if (cmd === 'gcloud functions describe')
    return `projects/${PROJECT}/locations/us-central1/triggers/${words[3]}-trigger`;
  if (words.slice(0, 4).join(' ') === 'gcloud eventarc triggers describe')
    return `projects/${PROJECT}/subscriptions/eventarc-${words[4]!.split('/').pop()}-sub`;
  throw new Error(`no fake value for ${words.join(' ')}`);
}

const FAKE_GCLOUD = `#!/bin/bash
# A fake project. FAKE_STATE=empty: nothing exists; FAKE_STATE=deployed: everything does.
printf '%s\\x1f' gcloud "$@" >>"$FAKE_LOG"; echo >>"$FAKE_LOG"
args=" $* "
case "$args" in
  *" auth print-access-token "*) echo fake-token; exit 0 ;;
  *" projects describe "*) echo ${NUMBER}; exit 0 ;;
  *" storage service-agent "*) echo service-${NUMBER}@gs-project-accounts.iam.gserviceaccount.com; exit 0 ;;
  *" functions describe "*"eventTrigger.trigger"*) echo "projects/${PROJECT}/locations/us-central1/triggers/$3-trigger"; exit 0 ;;
  *" eventarc triggers describe "*) t=\${4##*/}; echo "projects/${PROJECT}/subscriptions/eventarc-$t-sub"; exit 0 ;;
  *" indexes composite list "*)
    if [ "$FAKE_STATE" = deployed ]; then cat "$FAKE_INDEXES"; else echo '[]'; fi; exit 0 ;;
  *" describe "*) [ "$FAKE_STATE" = deployed ]; exit ;;
esac
exit 0
`;

// curl, for infra/lib/firestore-rules.sh: the Firebase Rules API of the fake project.
const FAKE_CURL = `#!/bin/bash
printf '%s\\x1f' curl "$@" >>"$FAKE_LOG"; echo >>"$FAKE_LOG"
out=/dev/null method=GET
while [ "$#" -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -X) method=$2; shift ;;
    -w | -H | --data-binary) shift ;;
    *) url=$1 ;;
  esac
  shift
done
case "$method $url" in
  "GET "*/releases/cloud.firestore)
    if [ "$FAKE_STATE" = deployed ]; then
      echo '{"name":"projects/${PROJECT}/releases/cloud.firestore","rulesetName":"projects/${PROJECT}/rulesets/live"}' >"$out"; printf 200
    else echo '{"error":{"code":404}}' >"$out"; printf 404; fi ;;
  "GET "*/rulesets/live)
    node -e 'process.stdout.write(JSON.stringify({source:{files:[{name:"firestore.rules",content:require("fs").readFileSync(process.argv[1],"utf8")}]}}))' "$FAKE_RULES" >"$out"; printf 200 ;;
  "POST "*/rulesets) echo '{"name":"projects/${PROJECT}/rulesets/new"}' >"$out"; printf 200 ;;
  "POST "*/releases | "PATCH "*) echo '{}' >"$out"; printf 200 ;;
  *) echo "unexpected $method $url" >&2; printf 500 ;;
esac
`;

/** Runs deploy.sh for real in the fake project; returns the calls made, as words. */
function deployInto(state: 'empty' | 'deployed'): {
  status: number | null;
  stderr: string;
  calls: string[][];
} {
  const bin = path.join(dir, `bin-${state}`);
  const log = path.join(dir, `calls-${state}.log`);
  spawnSync('mkdir', ['-p', bin]);
  writeFileSync(path.join(bin, 'gcloud'), FAKE_GCLOUD);
  writeFileSync(path.join(bin, 'curl'), FAKE_CURL);
  for (const tool of ['gcloud', 'curl']) chmodSync(path.join(bin, tool), 0o755);
  // The indexes the deployed project has: those of firestore.indexes.json, as gcloud lists them.
  const config = JSON.parse(
    readFileSync(path.join(ROOT, 'infra/firestore.indexes.json'), 'utf8'),
  ) as {
    indexes: { collectionGroup: string; queryScope: string; fields: object[] }[];
  };
  const listed = config.indexes.map((ix, i) => ({
    name: `projects/${PROJECT}/databases/(default)/collectionGroups/${ix.collectionGroup}/indexes/i${i}`,
    queryScope: ix.queryScope,
    state: 'READY',
    fields: [...ix.fields, { fieldPath: '__name__', order: 'ASCENDING' }],
  }));
  const indexes = path.join(dir, 'indexes.json');
  writeFileSync(indexes, JSON.stringify(listed));
  const result = spawnSync('bash', ['infra/deploy.sh', '--project', PROJECT], {
    cwd: ROOT,
    encoding: 'utf8',
    env: {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      HOME: process.env.HOME ?? dir,
      FAKE_STATE: state,
      FAKE_LOG: log,
      FAKE_INDEXES: indexes,
      FAKE_RULES: path.join(ROOT, 'infra/firestore.rules'),
    },
    timeout: 120_000,
  });
  const calls = existsSync(log)
    ? readFileSync(log, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\x1f').slice(0, -1))
    : [];
  return { status: result.status, stderr: result.stderr, calls };
}

/** Calls the helper scripts make (they are one line each in the plan). */
const helperCall = (c: string[]) =>
  c[0] === 'curl' ||
  c.slice(1, 3).join(' ') === 'auth print-access-token' ||
  c.slice(1, 5).join(' ') === 'firestore indexes composite list';

describe('infra/deploy.sh, run against a fake project', () => {
  const dry = runScript('infra/deploy.sh', ['--dry-run', '--project', PROJECT]);
  const plan = parsePlan(dry.stdout);

  test('in an empty project it runs exactly the commands of its dry run, in order', () => {
    const { status, stderr, calls } = deployInto('empty');
    expect(stderr).not.toMatch(/gave up|unbound variable|syntax error/);
    expect(status).toBe(0);
    const values = new Map<string, string>();
    const resolve = (words: string[]) =>
      words.map((w) =>
        w.replace(/\$\{([A-Z_]+)\}/g, (_m, name: string) => values.get(name) ?? `\${${name}}`),
      );
    const expected: string[][] = [];
    for (const c of plan) {
      if (c.words[0] === 'bash') continue; // a helper: its own calls are checked below
      if (c.guard && c.guard[0] !== 'bash') expected.push(resolve(c.guard)); // helpers: below
      const words = resolve(c.words);
      expected.push(words);
      if (c.assigns) values.set(c.assigns, lookupValue(words));
    }
    expect(calls.filter((c) => !helperCall(c))).toEqual(expected);
    // The helpers looked for the indexes (then created them) and released the rules.
    expect(
      calls.filter((c) => c.slice(1, 5).join(' ') === 'firestore indexes composite list'),
    ).toHaveLength(
      plan.filter((c) => c.guard?.[1] === 'infra/lib/firestore-index-exists.sh').length,
    );
    const curls = calls
      .filter((c) => c[0] === 'curl')
      .map((c) => `${c[c.indexOf('-X') + 1]} ${c[c.length - 1]}`);
    expect(curls).toEqual([
      `GET https://firebaserules.googleapis.com/v1/projects/${PROJECT}/releases/cloud.firestore`,
      `POST https://firebaserules.googleapis.com/v1/projects/${PROJECT}/rulesets`,
      `POST https://firebaserules.googleapis.com/v1/projects/${PROJECT}/releases`,
    ]);
  });

  test('in a deployed project it creates nothing and releases no rules', () => {
    const { status, stderr, calls } = deployInto('deployed');
    expect(status).toBe(0);
    expect(stderr).toContain('already serves infra/firestore.rules');
    const lines = calls.map((c) => c.join(' '));
    expect(lines.filter((l) => / create /.test(l) && !/ identity create /.test(l))).toEqual([]);
    expect(calls.filter((c) => c[0] === 'curl' && c[c.indexOf('-X') + 1] !== 'GET')).toEqual([]);
    // Besides reads, only calls that set a value to what it already is: enabling enabled APIs,
    // adding existing bindings, the same exemptions and dead-letter policies, and the deploys.
    const readOnly = /^(curl|gcloud .*\b(describe|list|print-access-token|service-agent)\b)/;
    const sameValue =
      /^gcloud (services enable|beta services identity create|\S+ (\S+ )?add-iam-policy-binding|functions add-invoker-policy-binding|firestore indexes fields update|pubsub subscriptions update|functions deploy) /;
    expect(lines.filter((l) => !readOnly.test(l) && !sameValue.test(l))).toEqual([]);
    expect(lines.filter((l) => sameValue.test(l)).length).toBeGreaterThan(40);
  });
});
