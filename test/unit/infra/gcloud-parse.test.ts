/**
 * Every gcloud command of the deployment plans, through the real gcloud's parser: the commands
 * of `infra/deploy.sh --dry-run` (with the settings that change its commands),
 * `infra/teardown.sh --dry-run` (with and without --delete-data) and `infra/tpu/workers.sh` in
 * each of its modes, and the helper scripts the plans call, are run with the installed gcloud
 * inside a network namespace that has no network at all (`unshare -n`: not even an address to
 * try but its own loopback) and a throwaway, empty `CLOUDSDK_CONFIG`. A command that parses
 * goes on to ask for credentials and stops there, with "You do not currently have an active
 * account selected"; anything else (an unrecognized argument, an invalid choice or value,
 * mutually exclusive flags, any other failure before the credentials) fails the test with
 * gcloud's own message. Values only a real project knows (the project number, the
 * subscription Eventarc made) are given plausible stand-ins.
 *
 * Skipped, by name, where gcloud is not installed or `unshare -n` cannot make a namespace (it
 * needs root, or unprivileged user namespaces).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { ROOT, parsePlan, runScript } from './plan';

const PROJECT = 'demo-infra-parse';
const NUMBER = '123456789012';

const gcloudPath = spawnSync('bash', ['-c', 'command -v gcloud'], {
  encoding: 'utf8',
}).stdout.trim();
const unshare = spawnSync('unshare', ['-n', 'true'], { encoding: 'utf8' });
const skipReason = !gcloudPath
  ? 'gcloud is not installed (the Google Cloud SDK)'
  : unshare.error || unshare.status !== 0
    ? `unshare -n cannot make a network namespace here (${unshare.error?.message ?? unshare.stderr.trim()}; it needs root or user namespaces)`
    : undefined;

/** Stand-ins for the values a dry run prints as "${NAME}". */
function standIn(name: string): string {
  if (name === 'PROJECT_NUMBER') return NUMBER;
  if (name === 'GCS_SERVICE_AGENT')
    return `service-${NUMBER}@gs-project-accounts.iam.gserviceaccount.com`;
  if (name.endsWith('_TRIGGER_SUBSCRIPTION'))
    return `projects/${PROJECT}/subscriptions/eventarc-us-central1-${name.toLowerCase().replace(/_/g, '-')}-sub-101`;
  if (name.endsWith('_TRIGGER'))
    return `projects/${PROJECT}/locations/us-central1/triggers/${name.toLowerCase().replace(/_/g, '-')}-101`;
  throw new Error(`no stand-in for \${${name}}`);
}

/** The commands a plan runs: each guard, each command, each lookup, stand-ins substituted. */
function commandsOf(script: string, args: string[]): string[][] {
  const run = runScript(script, args);
  if (run.status !== 0) throw new Error(`${script} ${args.join(' ')} failed: ${run.stderr}`);
  const out: string[][] = [];
  const resolve = (words: string[]) =>
    words.map((w) => w.replace(/\$\{([A-Z_]+)\}/g, (_m, name: string) => standIn(name)));
  for (const c of parsePlan(run.stdout)) {
    if (c.guard) out.push(resolve(c.guard));
    out.push(resolve(c.words));
  }
  return out;
}

const deployArgs = ['--dry-run', '--project', PROJECT];
const workerArgs = ['--dry-run', '--project', PROJECT];
const create = [...workerArgs, '--dataset-id', 'arc', '--model-path', '/models'];
/** Each script in each mode that changes the commands it prints. */
const PLANS: Array<[string, string, string[]]> = [
  ['deploy.sh', 'infra/deploy.sh', deployArgs],
  [
    'deploy.sh with a lifecycle, a named database, output buckets, the token creator grant',
    'infra/deploy.sh',
    [
      ...deployArgs,
      '--database',
      'shardline-db',
      '--set',
      'SHARDLINE_BUCKET_LIFECYCLE_FILE=infra/lifecycle.example.json',
      '--set',
      'SHARDLINE_OUTPUT_BUCKETS=demo-infra-parse-acts',
      '--set',
      'SHARDLINE_GRANT_PUBSUB_TOKEN_CREATOR=true',
    ],
  ],
  [
    'deploy.sh with the project-default build account and no deployer',
    'infra/deploy.sh',
    [
      ...deployArgs,
      '--set',
      'SHARDLINE_BUILD_SERVICE_ACCOUNT=project-default',
      '--set',
      'SHARDLINE_CREATE_DEPLOYER_SA=false',
    ],
  ],
  ['deploy.sh --reconcile', 'infra/deploy.sh', [...deployArgs, '--reconcile']],
  ['teardown.sh', 'infra/teardown.sh', ['--dry-run', '--project', PROJECT]],
  [
    'teardown.sh --delete-data',
    'infra/teardown.sh',
    ['--dry-run', '--project', PROJECT, '--delete-data'],
  ],
  ['workers.sh create (spot, jax)', 'infra/tpu/workers.sh', ['create', ...create]],
  [
    'workers.sh create --on-demand --backend onnx',
    'infra/tpu/workers.sh',
    [
      'create',
      ...create,
      '--on-demand',
      '--backend',
      'onnx',
      '--model-uri',
      'gs://demo-infra-parse-models/qwen',
      '--workers-per-host',
      '2',
    ],
  ],
  ['workers.sh create --queued', 'infra/tpu/workers.sh', ['create', ...create, '--queued']],
  ['workers.sh delete', 'infra/tpu/workers.sh', ['delete', ...workerArgs]],
  ['workers.sh delete --queued', 'infra/tpu/workers.sh', ['delete', ...workerArgs, '--queued']],
  ['workers.sh status', 'infra/tpu/workers.sh', ['status', ...workerArgs]],
  ['workers.sh status --queued', 'infra/tpu/workers.sh', ['status', ...workerArgs, '--queued']],
];

/** What a command that parsed says when it goes on to need credentials. */
const NO_CREDENTIALS = /You do not currently have an active account selected/;

interface Outcome {
  command: string[];
  status: number | null;
  output: string;
}

/** Runs one command (gcloud, or a helper script that calls it) with no network. */
function runOffline(words: string[], config: string): Promise<Outcome> {
  const argv = words[0] === 'gcloud' ? [gcloudPath, ...words.slice(1)] : words;
  return new Promise((resolve) => {
    const child = spawn('unshare', ['-n', '--', ...argv], {
      cwd: ROOT,
      env: {
        PATH: `${path.dirname(gcloudPath)}:/usr/bin:/bin`,
        HOME: config,
        CLOUDSDK_CONFIG: config,
        CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING: 'true',
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: 'true',
        CLOUDSDK_CORE_CHECK_GCE_METADATA: 'false',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('close', (status) => resolve({ command: words, status, output }));
  });
}

/** Runs every command, two at a time (the machine has two cores). */
async function runAll(commands: string[][], config: string): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < commands.length) {
      const c = commands[next++]!;
      outcomes.push(await runOffline(c, config));
    }
  };
  await Promise.all([lane(), lane()]);
  return outcomes;
}

describe('the deployment plans through the real gcloud parser, offline', () => {
  if (skipReason) {
    console.warn(`skipping the gcloud parser test: ${skipReason}`);
    test.skip(`every gcloud command of the plans parses (skipped: ${skipReason})`, () => {});
    return;
  }
  const config = mkdtempSync(path.join(tmpdir(), 'shardline-gcloud-config-'));
  afterAll(() => rmSync(config, { recursive: true, force: true }));
  const seen = new Set<string>();

  test('a usage error is caught: the first deploy with a flag gcloud does not know is refused', async () => {
    const deploy = commandsOf('infra/deploy.sh', [...deployArgs, '--only', 'functions']).find(
      (c) => c[1] === 'functions' && c[2] === 'deploy',
    )!;
    const [outcome] = await runAll([[...deploy, '--no-such-flag']], config);
    expect(outcome!.status).toBe(2);
    expect(outcome!.output).toMatch(/unrecognized arguments: --no-such-flag/);
    expect(outcome!.output).not.toMatch(NO_CREDENTIALS);
  }, 120_000);

  test.each(PLANS)(
    '%s',
    async (_name, script, args) => {
      const all = commandsOf(script, args);
      expect(all.length).toBeGreaterThan(0);
      for (const c of all) expect(['gcloud', 'bash']).toContain(c[0]);
      // Commands an earlier plan ran already are not run again.
      const fresh = all.filter((c) => {
        const key = JSON.stringify(c);
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
      });
      const outcomes = await runAll(fresh, config);
      const refused = outcomes
        .filter((o) => !(o.status === 1 && NO_CREDENTIALS.test(o.output)))
        .map(
          (o) =>
            `${o.command.join(' ')}\n  exit ${o.status}: ${o.output.split('\n').slice(0, 3).join('\n  ')}`,
        );
      expect(refused).toEqual([]);
      // Each gcloud start costs about a second of CPU; the full deploy plan is over a hundred.
    },
    900_000,
  );
});
