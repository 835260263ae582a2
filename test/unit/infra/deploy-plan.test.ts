/**
 * infra/deploy.sh --dry-run is the deployment plan. With no cloud to deploy into, these tests
 * check the plan itself: it calls no cloud tool, every function it deploys exists in
 * functions/, only the uploads bucket wakes ingest, every topic a trigger or a worker uses is
 * created, no identity gets a broad role, every retrying trigger gets its dead-letter policy on
 * every deploy path, every create is guarded, and a second run prints the same commands.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

import type { PlanCommand } from './plan';
import { ROOT, flag, flags, parsePlan, runScript, startsWith } from './plan';

const PROJECT = 'demo-infra-plan';

function plan(args: string[] = [], env: Record<string, string> = {}): PlanCommand[] {
  const run = runScript('infra/deploy.sh', ['--dry-run', '--project', PROJECT, ...args], env);
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  return parsePlan(run.stdout);
}

/** What a binding is on: `project`, `bucket gs://B`, `topic T`, `subscription S`, `repository R`, ... */
function bindingTarget(c: PlanCommand): string {
  if (startsWith(c, 'gcloud', 'projects')) return 'project';
  if (startsWith(c, 'gcloud', 'functions')) return `function ${c.words[3]}`;
  const kinds: Record<string, string> = {
    'storage buckets': 'bucket',
    'pubsub topics': 'topic',
    'pubsub subscriptions': 'subscription',
    'artifacts repositories': 'repository',
    'iam service-accounts': 'service account',
  };
  return `${kinds[c.words.slice(1, 3).join(' ')] ?? c.words.slice(1, 3).join(' ')} ${c.words[4]}`;
}

/** Topic ids the plan uses (triggers, subscriptions, scheduler, function settings, bindings). */
function topicsUsed(commands: PlanCommand[]): Map<string, string> {
  const topicId = (t: string) => t.replace(/^projects\/[^/]+\/topics\//, '');
  const used = new Map<string, string>();
  for (const c of commands) {
    for (const name of ['topic', 'trigger-topic', 'dead-letter-topic']) {
      const t = flag(c, name);
      if (t) used.set(topicId(t), `--${name} of ${c.words.slice(0, 4).join(' ')}`);
    }
    for (const e of flag(c, 'set-env-vars')?.split(',') ?? [])
      if (/^SHARDLINE_\w+_TOPIC=/.test(e))
        used.set(e.split('=')[1]!, `${e.split('=')[0]} of functions`);
    if (startsWith(c, 'gcloud', 'pubsub', 'topics', 'add-iam-policy-binding'))
      used.set(c.words[4]!, 'an IAM binding');
  }
  return used;
}

const only = (commands: PlanCommand[], ...words: string[]) =>
  commands.filter((c) => startsWith(c, ...words));

/** Relative imports of a TypeScript file, resolved to files. */
function importsOf(file: string): string[] {
  const source = readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const m of source.matchAll(
    /(?:import|export)[^'"`;]*?from\s*['"](\.[^'"]+)['"]|import\s*['"](\.[^'"]+)['"]/g,
  )) {
    const spec = m[1] ?? m[2]!;
    const base = path.resolve(path.dirname(file), spec.replace(/\.js$/, ''));
    for (const candidate of [`${base}.ts`, path.join(base, 'index.ts')]) {
      if (existsSync(candidate)) {
        found.push(candidate);
        break;
      }
    }
  }
  return found;
}

/**
 * Functions-framework registrations (`functions.cloudEvent('name', ...)`, `cloudEvent<T>('name'`,
 * `http('name'`) in the files that functions/index.ts loads, directly or through imports:
 * the entry points dist/functions/index.js exports.
 */
function registeredEntryPoints(): { names: Map<string, string>; problem?: string } {
  const dir = path.join(ROOT, 'functions');
  const index = path.join(dir, 'index.ts');
  const names = new Map<string, string>();
  if (!existsSync(index)) {
    const present = existsSync(dir) ? readdirSync(dir) : [];
    return {
      names,
      problem: `functions/index.ts does not exist (functions/ holds: ${present.join(', ') || 'nothing'})`,
    };
  }
  const seen = new Set<string>();
  const queue = [index];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file) || !statSync(file).isFile()) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(
      /\b(?:cloudEvent|http)\s*(?:<[^>()]*>)?\s*\(\s*['"`]([A-Za-z_$][\w$]*)['"`]/g,
    ))
      names.set(m[1]!, path.relative(ROOT, file));
    queue.push(...importsOf(file));
  }
  return { names };
}

describe('infra/deploy.sh --dry-run', () => {
  const commands = plan();
  const deploys = only(commands, 'gcloud', 'functions', 'deploy');

  test('runs no gcloud, curl, docker or firebase command', () => {
    const run = runScript('infra/deploy.sh', ['--dry-run', '--project', PROJECT]);
    expect(run.status).toBe(0);
    expect(run.cloudCalls).toEqual([]);
    expect(commands.length).toBeGreaterThan(50);
  });

  test('deploys the four functions, gen2 on Node 22, with their triggers, limits and retry', () => {
    const byEntry = new Map(deploys.map((d) => [flag(d, 'entry-point'), d]));
    expect([...byEntry.keys()].sort()).toEqual(['ingest', 'ingestStep', 'progress', 'reap']);
    for (const d of deploys) {
      expect(d.words).toContain('--gen2');
      expect(flag(d, 'runtime')).toBe('nodejs22');
      expect(flag(d, 'source')).toBe('.');
      expect(flag(d, 'service-account')).toMatch(/@demo-infra-plan\.iam\.gserviceaccount\.com$/);
    }
    const ingest = byEntry.get('ingest')!;
    expect(flags(ingest, 'trigger-event-filters').sort()).toEqual([
      'bucket=demo-infra-plan-shardline-uploads',
      'type=google.cloud.storage.object.v1.finalized',
    ]);
    expect(ingest.words).toContain('--retry');
    expect(flag(ingest, 'timeout')).toBe('540s');
    expect(flag(ingest, 'memory')).toBe('2Gi');
    // Concurrent deliveries share an instance (the ingest record makes them safe); a
    // concurrency above 1 needs a whole CPU.
    for (const d of [ingest, byEntry.get('ingestStep')!]) {
      expect(Number(flag(d, 'concurrency'))).toBeGreaterThan(1);
      expect(Number(flag(d, 'cpu'))).toBeGreaterThanOrEqual(1);
    }
    expect(flag(byEntry.get('reap')!, 'concurrency')).toBeUndefined();
    expect(flag(byEntry.get('ingestStep')!, 'trigger-topic')).toBe('shardline-ingest');
    expect(flag(byEntry.get('ingestStep')!, 'timeout')).toBe('540s');
    expect(flag(byEntry.get('reap')!, 'trigger-topic')).toBe('shardline-tick');
    expect(flag(byEntry.get('reap')!, 'memory')).toBe('512Mi');
    expect(flag(byEntry.get('reap')!, 'timeout')).toBe('300s');
    expect(byEntry.get('reap')!.words).not.toContain('--retry');
    expect(flag(byEntry.get('progress')!, 'trigger-topic')).toBe('shardline-events');
    expect(flag(byEntry.get('progress')!, 'memory')).toBe('512Mi');
    const env = flag(ingest, 'set-env-vars')!.split(',');
    for (const name of [
      'GOOGLE_CLOUD_PROJECT',
      'SHARDLINE_WORK_TOPIC',
      'SHARDLINE_EVENTS_TOPIC',
      'SHARDLINE_INGEST_TOPIC',
      'SHARDLINE_FIRESTORE_DATABASE',
      'SHARDLINE_INGEST_PREFIX',
      'SHARDLINE_DATASETS_PREFIX',
      'SHARDLINE_DEFAULT_NUM_SHARDS',
      'SHARDLINE_CHUNK_SIZE_MB',
    ])
      expect(env.map((e) => e.split('=')[0])).toContain(name);
    // The shards' attempt budget reaches the ingest (functions/config.ts reads it).
    expect(env).toContain('SHARDLINE_SHARD_MAX_ATTEMPTS=3');
    // Datasets go to the data bucket, not the bucket the upload came from.
    expect(env).toContain(`SHARDLINE_DATA_BUCKET=${PROJECT}-shardline`);
  });

  test('uploads and data live in two buckets, and only the uploads bucket has a trigger', () => {
    const buckets = only(commands, 'gcloud', 'storage', 'buckets', 'create').map((c) => c.words[4]);
    expect(buckets).toEqual([`gs://${PROJECT}-shardline-uploads`, `gs://${PROJECT}-shardline`]);
    const storageTriggers = deploys.filter((d) => flags(d, 'trigger-event-filters').length > 0);
    expect(storageTriggers.map((d) => flags(d, 'trigger-event-filters'))).toEqual([
      ['type=google.cloud.storage.object.v1.finalized', `bucket=${PROJECT}-shardline-uploads`],
    ]);
    // The lifecycle file (delete old uploads) goes to the uploads bucket.
    const withLifecycle = plan([
      '--set',
      'SHARDLINE_BUCKET_LIFECYCLE_FILE=infra/lifecycle.example.json',
    ]);
    expect(
      only(withLifecycle, 'gcloud', 'storage', 'buckets', 'update').map((c) => c.words[4]),
    ).toEqual([`gs://${PROJECT}-shardline-uploads`]);
    // Named buckets, and a refusal to put both in one.
    const named = plan(['--bucket', 'team-data', '--uploads-bucket', 'team-drop']);
    expect(only(named, 'gcloud', 'storage', 'buckets', 'create').map((c) => c.words[4])).toEqual([
      'gs://team-drop',
      'gs://team-data',
    ]);
    const same = runScript('infra/deploy.sh', [
      '--dry-run',
      '--project',
      PROJECT,
      '--bucket',
      'one-bucket',
      '--uploads-bucket',
      'one-bucket',
    ]);
    expect(same.status).toBe(2);
    expect(same.stderr).toMatch(/SHARDLINE_UPLOADS_BUCKET must differ from SHARDLINE_BUCKET/);
  });

  test('every retrying function gets its dead-letter policy right after each deploy, and --reconcile sets them alone', () => {
    const policyOf = (commands: PlanCommand[]) =>
      only(commands, 'gcloud', 'pubsub', 'subscriptions', 'update').map((c) => [
        c.words[4],
        flag(c, 'dead-letter-topic'),
      ]);
    const expected = [
      [
        '${INGEST_TRIGGER_SUBSCRIPTION}',
        `projects/${PROJECT}/topics/shardline-uploads-dead-letter`,
      ],
      [
        '${INGEST_STEP_TRIGGER_SUBSCRIPTION}',
        `projects/${PROJECT}/topics/shardline-ingest-dead-letter`,
      ],
      [
        '${PROGRESS_TRIGGER_SUBSCRIPTION}',
        `projects/${PROJECT}/topics/shardline-events-dead-letter`,
      ],
    ];
    expect(policyOf(commands)).toEqual(expected);
    // In the plan, each policy follows its function's deploy before the next deploy.
    const order = commands
      .filter(
        (c) =>
          startsWith(c, 'gcloud', 'functions', 'deploy') ||
          startsWith(c, 'gcloud', 'pubsub', 'subscriptions', 'update'),
      )
      .map((c) => (c.words[2] === 'deploy' ? flag(c, 'entry-point') : 'dead-letter'));
    expect(order).toEqual([
      'ingest',
      'dead-letter',
      'ingestStep',
      'dead-letter',
      'reap',
      'progress',
      'dead-letter',
    ]);
    // What CI runs (--only functions) cannot drop a policy either.
    expect(policyOf(plan(['--only', 'functions']))).toEqual(expected);
    // --reconcile: only the lookups and the policies, nothing deployed or granted.
    const reconcile = plan(['--reconcile']);
    expect(policyOf(reconcile)).toEqual(expected);
    expect(
      reconcile.filter(
        (c) => !c.assigns && !startsWith(c, 'gcloud', 'pubsub', 'subscriptions', 'update'),
      ),
    ).toEqual([]);
    // The Pub/Sub service agent subscribes project-wide, so a re-created subscription keeps it.
    expect(
      commands.some(
        (c) =>
          startsWith(c, 'gcloud', 'projects', 'add-iam-policy-binding') &&
          flag(c, 'member') ===
            'serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com' &&
          flag(c, 'role') === 'roles/pubsub.subscriber',
      ),
    ).toBe(true);
  });

  test('every deployed entry point is a functions-framework registration loaded by functions/index.ts', () => {
    const { names, problem } = registeredEntryPoints();
    const missing = deploys
      .map((d) => flag(d, 'entry-point')!)
      .filter((entry) => !names.has(entry));
    if (missing.length > 0)
      throw new Error(
        `deploy.sh deploys entry points with no registration reachable from functions/index.ts: ${missing.join(', ')}` +
          (problem ? `; ${problem}` : `; registered: ${[...names.keys()].join(', ') || 'none'}`),
      );
  });

  test('every topic a trigger, subscription, scheduler job, function or worker uses is created', () => {
    const created = new Set(
      only(commands, 'gcloud', 'pubsub', 'topics', 'create').map((c) => c.words[4]),
    );
    const topicId = (t: string) => t.replace(`projects/${PROJECT}/topics/`, '');
    const used = topicsUsed(commands);
    // What the workers use: the TPU launcher's settings for the same configuration.
    const tpu = runScript('infra/tpu/workers.sh', [
      'create',
      '--dry-run',
      '--project',
      PROJECT,
      '--dataset-id',
      'ds',
      '--model-path',
      '/models/m',
    ]);
    expect(tpu.status).toBe(0);
    const metadata = Object.fromEntries(
      flag(
        parsePlan(tpu.stdout).find((c) =>
          startsWith(c, 'gcloud', 'compute', 'tpus', 'tpu-vm', 'create'),
        )!,
        'metadata',
      )!
        .replace(/^\^\|\^/, '')
        .split('|')
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    used.set(metadata['shardline-work-topic']!, 'workers (re-ring)');
    used.set(metadata['shardline-events-topic']!, 'workers (shard events)');

    const missing = [...used].filter(([t]) => !created.has(t)).map(([t, by]) => `${t} (${by})`);
    expect(missing).toEqual([]);
    for (const t of ['shardline-work', 'shardline-events', 'shardline-tick', 'shardline-ingest'])
      expect(created).toContain(t);

    // The workers' subscription exists, on the work topic, with a dead-letter topic.
    const subscription = metadata['shardline-subscription']!.replace(
      `projects/${PROJECT}/subscriptions/`,
      '',
    );
    const sub = only(commands, 'gcloud', 'pubsub', 'subscriptions', 'create').find(
      (c) => c.words[4] === subscription,
    );
    expect(sub).toBeDefined();
    expect(flag(sub!, 'topic')).toBe('shardline-work');
    expect(flag(sub!, 'dead-letter-topic')).toBe(
      `projects/${PROJECT}/topics/shardline-work-dead-letter`,
    );
    expect(Number(flag(sub!, 'max-delivery-attempts'))).toBeGreaterThanOrEqual(5);

    // The scheduler job ticks the topic that triggers reap.
    const job = only(commands, 'gcloud', 'scheduler', 'jobs', 'create', 'pubsub')[0]!;
    expect(topicId(flag(job, 'topic')!)).toBe('shardline-tick');
    expect(flag(job, 'schedule')).toBe('* * * * *');
  });

  test('renamed topics and subscription are used consistently everywhere', () => {
    const renamed = plan([
      '--set',
      'SHARDLINE_WORK_TOPIC=w-topic',
      '--set',
      'SHARDLINE_EVENTS_TOPIC=e-topic',
      '--set',
      'SHARDLINE_TICK_TOPIC=t-topic',
      '--set',
      'SHARDLINE_INGEST_TOPIC=i-topic',
      '--set',
      'SHARDLINE_WORK_SUBSCRIPTION=w-sub',
    ]);
    expect([...topicsUsed(renamed).keys()].sort()).toEqual([
      'e-topic',
      'e-topic-dead-letter',
      'i-topic',
      'i-topic-dead-letter',
      'shardline-uploads-dead-letter',
      't-topic',
      'w-topic',
      'w-topic-dead-letter',
    ]);
    const created = only(renamed, 'gcloud', 'pubsub', 'topics', 'create').map((c) => c.words[4]);
    expect(created).toEqual(expect.arrayContaining(['w-topic', 'e-topic', 't-topic', 'i-topic']));
    const triggers = only(renamed, 'gcloud', 'functions', 'deploy').map((d) =>
      flag(d, 'trigger-topic'),
    );
    expect(triggers).toEqual([undefined, 'i-topic', 't-topic', 'e-topic']);
    expect(
      only(renamed, 'gcloud', 'pubsub', 'subscriptions', 'create').map((c) => c.words[4]),
    ).toContain('w-sub');
  });

  test('no identity gets owner, editor, or a project-wide storage admin role', () => {
    const bindings = commands.filter(
      (c) =>
        c.words.includes('add-iam-policy-binding') || c.words[2] === 'add-invoker-policy-binding',
    );
    expect(bindings.length).toBeGreaterThan(20);
    const forbidden = [
      'roles/owner',
      'roles/editor',
      'roles/viewer',
      'roles/iam.securityAdmin',
      'roles/resourcemanager.projectIamAdmin',
    ];
    for (const b of bindings) {
      const role = flag(b, 'role');
      if (role === undefined) continue;
      expect(forbidden).not.toContain(role);
      if (startsWith(b, 'gcloud', 'projects', 'add-iam-policy-binding')) {
        expect(role).not.toBe('roles/storage.admin');
        // A project-level Storage role is only ever granted under a condition naming buckets;
        // object admin only on the functions' own source buckets (the build account).
        if (role.startsWith('roles/storage.'))
          expect(flag(b, 'condition')).toMatch(
            /resource\.name\.startsWith\("projects\/_\/buckets\//,
          );
        if (role === 'roles/storage.objectAdmin')
          expect(flag(b, 'condition')).toMatch(
            /expression=resource\.name\.startsWith\("projects\/_\/buckets\/gcf-v2-"\)$/,
          );
      }
    }
  });

  test('every service account a binding names is created by the plan, or is a Google service agent', () => {
    const created = new Set(
      only(commands, 'gcloud', 'iam', 'service-accounts', 'create').map(
        (c) => `${c.words[4]}@${PROJECT}.iam.gserviceaccount.com`,
      ),
    );
    expect([...created].sort()).toEqual(
      ['build', 'deployer', 'ingest', 'ledger', 'worker'].map(
        (r) => `shardline-${r}@${PROJECT}.iam.gserviceaccount.com`,
      ),
    );
    for (const c of commands) {
      const member = flag(c, 'member');
      if (!member) continue;
      const email = member.replace(/^serviceAccount:/, '');
      const agent =
        /^(\$\{GCS_SERVICE_AGENT\}|service-\$\{PROJECT_NUMBER\}@gcp-sa-(pubsub|cloudscheduler)\.iam\.gserviceaccount\.com)$/.test(
          email,
        );
      expect({ email, created: created.has(email), agent }).toEqual({
        email,
        created: !agent,
        agent,
      });
    }
    // Functions run as their role's account, never the default compute account.
    for (const d of deploys) {
      expect(created).toContain(flag(d, 'service-account'));
      expect(flag(d, 'trigger-service-account')).toBe(flag(d, 'service-account'));
    }
  });

  test('each service account gets exactly the grants of the table in infra/README.md', () => {
    const sa = (role: string) =>
      `serviceAccount:shardline-${role}@${PROJECT}.iam.gserviceaccount.com`;
    const grantsOf = (member: string) =>
      commands
        .filter((c) => flag(c, 'member') === member)
        .map((c) => {
          const condition = flag(c, 'condition');
          const title =
            condition && condition !== 'None' ? /title=([\w-]+)/.exec(condition)?.[1] : undefined;
          return `${bindingTarget(c)} ${flag(c, 'role') ?? 'run.invoker'}${title ? ` if ${title}` : ''}`;
        })
        .sort();
    const bucket = `bucket gs://${PROJECT}-shardline`;
    const uploads = `bucket gs://${PROJECT}-shardline-uploads`;
    expect(grantsOf(sa('ingest'))).toEqual([
      `${bucket} roles/storage.objectUser if shardline-datasets-write`,
      `${uploads} roles/storage.objectViewer`,
      'function shardline-ingest run.invoker',
      'function shardline-ingest-step run.invoker',
      'project roles/datastore.user',
      'project roles/eventarc.eventReceiver',
      'topic shardline-ingest roles/pubsub.publisher',
      'topic shardline-work roles/pubsub.publisher',
    ]);
    expect(grantsOf(sa('ledger'))).toEqual([
      `${bucket} roles/storage.objectUser if shardline-datasets-write`,
      `${bucket} roles/storage.objectUser if shardline-manifests`,
      `${uploads} roles/storage.objectViewer`,
      'function shardline-progress run.invoker',
      'function shardline-reap run.invoker',
      'project roles/datastore.user',
      'topic shardline-events roles/pubsub.publisher',
      'topic shardline-ingest roles/pubsub.publisher',
      'topic shardline-work roles/pubsub.publisher',
    ]);
    expect(grantsOf(sa('worker'))).toEqual([
      `${bucket} roles/storage.objectUser`,
      'project roles/datastore.user',
      'project roles/logging.logWriter',
      'repository shardline roles/artifactregistry.reader',
      'subscription shardline-work-workers roles/pubsub.subscriber',
      'topic shardline-events roles/pubsub.publisher',
      'topic shardline-work roles/pubsub.publisher',
    ]);
    // Google's documented roles for a functions build account: log writer, Artifact Registry
    // writer, Storage object admin (here only on the functions' source buckets).
    expect(grantsOf(sa('build'))).toEqual([
      'project roles/logging.logWriter',
      'project roles/storage.objectAdmin if shardline-function-sources',
      'repository shardline roles/artifactregistry.writer',
    ]);
    expect(grantsOf(sa('deployer'))).toEqual([
      `project projects/${PROJECT}/roles/shardline_deadLetterReconciler`,
      'project roles/cloudfunctions.developer',
      'project roles/logging.logWriter',
      'project roles/storage.objectViewer if shardline-build-sources',
      'repository shardline roles/artifactregistry.writer',
      `service account shardline-build@${PROJECT}.iam.gserviceaccount.com roles/iam.serviceAccountUser`,
      `service account shardline-ingest@${PROJECT}.iam.gserviceaccount.com roles/iam.serviceAccountUser`,
      `service account shardline-ledger@${PROJECT}.iam.gserviceaccount.com roles/iam.serviceAccountUser`,
    ]);
  });

  test("the deployer's custom role holds only what the dead-letter reconcile needs", () => {
    const role = only(commands, 'gcloud', 'iam', 'roles', 'create')[0]!;
    expect(role.words[4]).toBe('shardline_deadLetterReconciler');
    expect(flag(role, 'permissions')!.split(',').sort()).toEqual([
      'eventarc.triggers.get',
      'pubsub.subscriptions.get',
      'pubsub.subscriptions.update',
    ]);
  });

  test('output buckets: workers write there, and the ledger account only manifests', () => {
    const grants = plan(['--set', 'SHARDLINE_OUTPUT_BUCKETS=acts-a,acts-b'])
      .filter((c) => ['gs://acts-a', 'gs://acts-b'].includes(c.words[4]!))
      .map((c) => {
        const title = /title=([\w-]+)/.exec(flag(c, 'condition') ?? '')?.[1];
        return `${c.words[4]} ${flag(c, 'member')!.split('@')[0]} ${flag(c, 'role')}${title ? ` if ${title}` : ''}`;
      })
      .sort();
    expect(grants).toEqual([
      'gs://acts-a serviceAccount:shardline-ledger roles/storage.objectUser if shardline-manifests',
      'gs://acts-a serviceAccount:shardline-worker roles/storage.objectUser',
      'gs://acts-b serviceAccount:shardline-ledger roles/storage.objectUser if shardline-manifests',
      'gs://acts-b serviceAccount:shardline-worker roles/storage.objectUser',
    ]);
  });

  test('the dataset and manifest conditions name the bucket, its prefix, and manifests', () => {
    const conditions = new Set(
      commands.map((c) => flag(c, 'condition')).filter((c) => c && c !== 'None'),
    );
    expect(conditions).toContain(
      '^;^title=shardline-manifests;description=_MANIFEST.json objects only;' +
        'expression=resource.name.endsWith("/_MANIFEST.json")',
    );
    expect(conditions).toContain(
      '^;^title=shardline-datasets-write;description=objects under datasets/;' +
        `expression=resource.name.startsWith("projects/_/buckets/${PROJECT}-shardline/objects/datasets/")` +
        ' || api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("datasets/")',
    );
  });

  test('every create is guarded by an existence check, so a real re-run creates nothing', () => {
    const unguarded = commands.filter(
      (c) =>
        c.words.includes('create') &&
        !c.guard &&
        !startsWith(c, 'gcloud', 'beta', 'services', 'identity', 'create'), // idempotent API
    );
    expect(unguarded.map((c) => c.line)).toEqual([]);
    for (const c of commands.filter((c) => c.guard)) {
      const probe = c.guard!.join(' ');
      expect(probe).toMatch(/ describe |firestore-index-exists\.sh/);
    }
  });

  test('a second dry run prints the same plan', () => {
    const first = runScript('infra/deploy.sh', ['--dry-run', '--project', PROJECT]);
    const second = runScript('infra/deploy.sh', ['--dry-run', '--project', PROJECT]);
    expect(second.stdout).toBe(first.stdout);
    expect(second.status).toBe(0);
  });

  test('--only functions prints only the function deploys and their dead-letter policies (what cloudbuild.yaml runs)', () => {
    const fns = plan(['--only', 'functions']);
    const deployed = fns.filter((c) => startsWith(c, 'gcloud', 'functions', 'deploy'));
    expect(deployed.map((c) => c.line)).toEqual(deploys.map((c) => c.line));
    const rest = fns
      .filter((c) => !startsWith(c, 'gcloud', 'functions', 'deploy'))
      .map((c) => c.words.slice(0, 4).join(' '));
    expect([...new Set(rest)].sort()).toEqual([
      'gcloud eventarc triggers describe',
      'gcloud functions describe shardline-ingest',
      'gcloud functions describe shardline-ingest-step',
      'gcloud functions describe shardline-progress',
      'gcloud pubsub subscriptions update',
    ]);
  });

  test('the Firestore indexes and field overrides of infra/firestore.indexes.json are all deployed', () => {
    const config = JSON.parse(
      readFileSync(path.join(ROOT, 'infra/firestore.indexes.json'), 'utf8'),
    ) as {
      indexes: unknown[];
      fieldOverrides: { fieldPath: string }[];
    };
    expect(only(commands, 'gcloud', 'firestore', 'indexes', 'composite', 'create')).toHaveLength(
      config.indexes.length,
    );
    expect(
      only(commands, 'gcloud', 'firestore', 'indexes', 'fields', 'update').map((c) => c.words[5]),
    ).toEqual(config.fieldOverrides.map((o) => o.fieldPath));
    expect(
      commands.some(
        (c) =>
          c.line.startsWith('bash infra/lib/firestore-rules.sh') &&
          c.words.includes('infra/firestore.rules'),
      ),
    ).toBe(true);
  });

  test('settings come from the env file, the environment overrides it, and flags override both', () => {
    const envFile = 'infra/shardline.env.example';
    const viaEnv = runScript('infra/deploy.sh', ['--dry-run', '--only', 'bucket'], {
      SHARDLINE_ENV_FILE: envFile,
    });
    expect(viaEnv.stdout).toContain('gs://my-project-shardline');
    const fileRun = runScript('infra/deploy.sh', [
      '--dry-run',
      '--env-file',
      envFile,
      '--only',
      'bucket',
    ]);
    expect(fileRun.stdout).toContain('gs://my-project-shardline');
    const envRun = runScript(
      'infra/deploy.sh',
      ['--dry-run', '--env-file', envFile, '--only', 'bucket'],
      {
        SHARDLINE_BUCKET: 'from-env-bucket',
      },
    );
    expect(envRun.stdout).toContain('gs://from-env-bucket');
    const flagRun = runScript(
      'infra/deploy.sh',
      ['--dry-run', '--env-file', envFile, '--only', 'bucket', '--bucket', 'from-flag-bucket'],
      { SHARDLINE_BUCKET: 'from-env-bucket' },
    );
    expect(flagRun.stdout).toContain('gs://from-flag-bucket');
    expect(flagRun.stdout).not.toContain('from-env-bucket');
  });

  test('a bad or missing setting fails before any command, naming the setting', () => {
    const missing = runScript('infra/deploy.sh', ['--dry-run']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/SHARDLINE_PROJECT is required/);
    const badBucket = runScript('infra/deploy.sh', [
      '--dry-run',
      '--project',
      PROJECT,
      '--bucket',
      'Bad_Bucket!',
    ]);
    expect(badBucket.status).toBe(2);
    expect(badBucket.stderr).toMatch(/SHARDLINE_BUCKET must be a bucket name; got 'Bad_Bucket!'/);
    const badStep = runScript('infra/deploy.sh', [
      '--dry-run',
      '--project',
      PROJECT,
      '--only',
      'everything',
    ]);
    expect(badStep.status).toBe(2);
    expect(badStep.stderr).toMatch(/unknown step 'everything'/);
  });
});

describe('infra/teardown.sh --dry-run', () => {
  const deployed = plan();
  const run = runScript('infra/teardown.sh', ['--dry-run', '--project', PROJECT]);
  const commands = parsePlan(run.stdout);

  test('runs no cloud command and removes what deploy.sh creates, keeping the data', () => {
    expect(run.status).toBe(0);
    expect(run.cloudCalls).toEqual([]);
    const deletes = commands.map((c) => c.words.join(' '));
    for (const c of only(deployed, 'gcloud', 'pubsub', 'topics', 'create'))
      expect(deletes).toContain(
        `gcloud pubsub topics delete ${c.words[4]} --project=${PROJECT} --quiet`,
      );
    for (const c of only(deployed, 'gcloud', 'pubsub', 'subscriptions', 'create'))
      expect(deletes).toContain(
        `gcloud pubsub subscriptions delete ${c.words[4]} --project=${PROJECT} --quiet`,
      );
    for (const c of only(deployed, 'gcloud', 'functions', 'deploy'))
      expect(deletes.some((d) => d.startsWith(`gcloud functions delete ${c.words[3]} `))).toBe(
        true,
      );
    for (const c of only(deployed, 'gcloud', 'iam', 'service-accounts', 'create'))
      expect(
        deletes.some((d) => d.startsWith(`gcloud iam service-accounts delete ${c.words[4]}@`)),
      ).toBe(true);
    expect(deletes.some((d) => d.startsWith('gcloud scheduler jobs delete'))).toBe(true);
    // Project-level grants outlive their account unless removed; teardown removes each one.
    for (const c of only(deployed, 'gcloud', 'projects', 'add-iam-policy-binding')) {
      const member = flag(c, 'member')!;
      if (!member.includes(`@${PROJECT}.iam.gserviceaccount.com`)) continue;
      expect(deletes).toContain(
        `gcloud projects remove-iam-policy-binding ${PROJECT} --member=${member} --role=${flag(c, 'role')} --all --format=none`,
      );
    }
    expect(deletes.join('\n')).not.toMatch(/storage rm|buckets delete|firestore databases delete/);
    for (const c of commands.filter((c) => c.words.includes('delete')))
      expect(c.guard).toBeDefined();
  });

  test('--delete-data also removes both buckets and the database', () => {
    const all = runScript('infra/teardown.sh', [
      '--dry-run',
      '--project',
      PROJECT,
      '--delete-data',
    ]);
    expect(all.status).toBe(0);
    expect(all.stdout).toContain(
      `gcloud storage rm --recursive gs://${PROJECT}-shardline-uploads --project=${PROJECT}`,
    );
    expect(all.stdout).toContain(
      `gcloud storage rm --recursive gs://${PROJECT}-shardline --project=${PROJECT}`,
    );
    expect(all.stdout).toContain('gcloud firestore databases delete');
  });
});
