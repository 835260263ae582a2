/**
 * A new project's first Storage trigger often fails while the service agents' permissions
 * propagate: infra/deploy.sh tries the deploy again on exactly those errors (with backoff, a
 * bounded number of times) and fails at once on any other error.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { makeTempDir } from '../../support/tmp';
import { ROOT } from './plan';

const { dir, cleanup } = makeTempDir('deploy-retry');
afterAll(cleanup);

const PROPAGATING =
  'ERROR: (gcloud.functions.deploy) Permission denied while using the Eventarc Service Agent. If you recently started to use Eventarc, it may take a few minutes before all necessary permissions are propagated to the Service Agent. Otherwise, verify that it has Eventarc Service Agent role.';

let run = 0;
/** `deploy.sh --only functions` where the first `failures` deploys of ingest print `message`. */
function deployWith(failures: number, message: string) {
  const bin = path.join(dir, `bin-${run++}`);
  mkdirSync(bin);
  const count = path.join(bin, 'count');
  const log = path.join(bin, 'calls');
  writeFileSync(
    path.join(bin, 'gcloud'),
    `#!/bin/bash
echo "$*" >>"${log}"
args=" $* "
case "$args" in
  *" functions deploy shardline-ingest "*)
    n=$(cat "${count}" 2>/dev/null || echo 0); echo $((n + 1)) >"${count}"
    if [ "$n" -lt ${failures} ]; then echo '${message}' >&2; exit 1; fi ;;
  *" functions describe "*) echo projects/p/locations/us-central1/triggers/t; exit 0 ;;
  *" eventarc triggers describe "*) echo projects/p/subscriptions/s; exit 0 ;;
esac
exit 0
`,
  );
  chmodSync(path.join(bin, 'gcloud'), 0o755);
  const result = spawnSync(
    'bash',
    ['infra/deploy.sh', '--project', 'demo-infra-retry', '--only', 'functions'],
    {
      cwd: ROOT,
      encoding: 'utf8',
      env: {
        PATH: `${bin}:${process.env.PATH ?? ''}`,
        HOME: process.env.HOME ?? dir,
        SHARDLINE_PROPAGATION_RETRY_SECONDS: '0',
      },
      timeout: 120_000,
    },
  );
  const calls = existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
  return {
    status: result.status,
    stderr: result.stderr,
    ingestDeploys: calls.filter((c) => c.startsWith('functions deploy shardline-ingest ')).length,
    otherDeploys: calls.filter(
      (c) =>
        c.startsWith('functions deploy ') && !c.startsWith('functions deploy shardline-ingest '),
    ).length,
  };
}

test('a deploy that meets a service-agent permission still propagating is tried again until it passes', () => {
  const r = deployWith(3, PROPAGATING);
  expect(r.status).toBe(0);
  expect(r.ingestDeploys).toBe(4);
  expect(r.otherDeploys).toBe(3);
  expect(r.stderr.match(/still propagating; retrying/g)).toHaveLength(3);
});

test('it gives up after 8 attempts, saying so', () => {
  const r = deployWith(100, PROPAGATING);
  expect(r.status).not.toBe(0);
  expect(r.ingestDeploys).toBe(8);
  expect(r.stderr).toContain('service-agent permissions still not propagated after 8 attempts');
  expect(r.otherDeploys).toBe(0);
});

test('any other error fails at once', () => {
  const r = deployWith(1, 'ERROR: (gcloud.functions.deploy) INVALID_ARGUMENT: bad runtime');
  expect(r.status).not.toBe(0);
  expect(r.ingestDeploys).toBe(1);
  expect(r.stderr).toContain('bad runtime');
  expect(r.stderr).not.toContain('retrying');
});
