/**
 * Security checks of issue 9 that need nothing running: dataset ids and object keys can never
 * leave their prefix (fuzzed with random and adversarial names), the local store never writes
 * outside its root, and logs never carry credentials or whole task payloads.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../../../core/blob/gcs';
import { LocalBlobStore } from '../../../core/blob/local';
import { checkKey } from '../../../core/blob/store';
import { MAX_DATASET_ID, checkDatasetId, slugDatasetId } from '../../../core/dataset/id';
import { ShardlineError } from '../../../core/errors';
import { datasetIdOf, inputNameProblem, inputPlaceOf } from '../../../core/ingest/object';
import { MAX_LOG_STRING, createLogger, redact, scrubSecrets } from '../../../core/log';
import { EXIT } from '../../../cli/exit-codes';
import { cli } from '../../support/cli';
import { bigTask } from '../../support/corpus';
import { readAndCheckDataset } from '../../support/dataset-check';
import { rng } from '../../support/jsonl-gen';
import { makeTempDir } from '../../support/tmp';

const { dir, cleanup } = makeTempDir('security');
afterAll(cleanup);

const SAFE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Pieces adversarial names are made of: traversal, encodings, look-alikes, controls. */
const PIECES = [
  '.',
  '..',
  '...',
  '/',
  '\\',
  '%2e',
  '%2E%2E%2F',
  '%2f',
  '%00',
  '%',
  '%zz',
  '\u0000',
  '\n',
  '\r',
  '\t',
  ' ',
  '\uff0e', // fullwidth full stop
  '\uff0f', // fullwidth solidus
  '\uff3c', // fullwidth reverse solidus
  '\u2024', // one dot leader
  '\u2025', // two dot leader (NFKD: "..")
  '\u2026', // ellipsis (NFKD: "...")
  '\ufe52', // small full stop
  '\u3002', // ideographic full stop
  '\u2215', // division slash
  '\u2044', // fraction slash
  '\u202e', // right-to-left override
  '\u200b', // zero-width space
  '\ud800', // lone surrogate
  '\u0130', // İ (lower-cases to two code points)
  '\u212a', // Kelvin sign (NFKD: K)
  '\ufb00', // ﬀ ligature
  'é',
  '日本',
  '🧩',
  '-',
  '_',
  '~',
  ':',
  '*',
  '?',
  '"',
  "'",
  '<>|',
  'a',
  'Z',
  '9',
  'CON',
  '.jsonl',
  '.gz',
  '.json',
];

function randomName(g: () => number, maxPieces: number): string {
  const n = Math.floor(g() * maxPieces);
  let s = '';
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(g() * PIECES.length)]!;
  return s;
}

const ADVERSARIAL_NAMES = [
  '',
  '.',
  '..',
  '../../x',
  '../../../etc/passwd',
  '..\\..\\x',
  '%2e%2e%2f%2e%2e%2fx',
  '%2E%2E%2F',
  '..%2f..%2f',
  '%252e%252e%252f',
  '\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx',
  '\u2025\u2215x',
  '.\u0000.',
  '\u0000',
  '-',
  '.hidden',
  '-leading-dash',
  '_underscore',
  'UPPER.JSONL',
  'x'.repeat(5000),
  '.'.repeat(5000),
  '-'.repeat(50_000) + 'a',
  'a' + '_'.repeat(50_000) + 'b',
  `${'é'.repeat(600)}.jsonl`,
  '🧩'.repeat(300),
];

/** Asserts that an id is safe everywhere it is used: a name, never a path. */
function expectSafeId(id: string, from: string): void {
  const ok =
    SAFE_ID.test(id) &&
    !id.includes('..') &&
    id.length <= MAX_DATASET_ID &&
    checkDatasetId(id) === id &&
    checkKey(`datasets/${id}/master_metadata.json`) !== '' &&
    path.posix.normalize(`datasets/${id}`) === `datasets/${id}` &&
    path.resolve('/data/datasets', id).startsWith('/data/datasets/');
  if (!ok) throw new Error(`unsafe dataset id ${JSON.stringify(id)} from ${JSON.stringify(from)}`);
}

describe('dataset ids never escape their prefix', () => {
  const g = rng(2024);
  const names = [
    ...ADVERSARIAL_NAMES,
    ...Array.from({ length: 4000 }, () => randomName(g, 12)),
    ...Array.from({ length: 200 }, () => randomName(g, 400)),
  ];

  test(`slugDatasetId: ${names.length} random and adversarial names`, () => {
    for (const name of names) {
      expectSafeId(slugDatasetId(name), name);
      expectSafeId(slugDatasetId(name, 54), name);
      expect(slugDatasetId(name, 54).length).toBeLessThanOrEqual(54);
    }
  });

  test(`datasetIdOf: ${names.length} object names, as uploaded and in folders, versions 1 to 1000`, () => {
    for (const name of names) {
      for (const object of [
        `incoming/${name}.jsonl`,
        `incoming/${name}/${name}.jsonl.gz`,
        `incoming/${name}`,
      ]) {
        for (const version of [1, 2, 1000]) {
          expectSafeId(datasetIdOf({ bucket: 'b', name: object }, version), object);
        }
      }
    }
  });

  test('datasetIdOf: traversal in any spelling ends up as a plain name', () => {
    for (const object of [
      'incoming/../../datasets/victim.jsonl',
      'incoming/%2e%2e%2f%2e%2e%2fdatasets%2fvictim.jsonl',
      'incoming/..%2F..%2Fvictim.jsonl',
      'incoming/\uff0e\uff0e\uff0fvictim.jsonl',
      'incoming/\u2025\u2215victim.jsonl',
    ]) {
      const id = datasetIdOf({ bucket: 'b', name: object }, 1);
      expectSafeId(id, object);
      expect(id).toMatch(/^(datasets-)?victim-[0-9a-f]{8}$/);
    }
  });

  test('the ingest reads its input under exactly the uploaded name, whatever it holds', () => {
    const seen = { accepted: 0, refused: 0 };
    for (const name of names) {
      const object = `incoming/${name}.jsonl`;
      const { prefix, key } = inputPlaceOf(object);
      const store = new GcsBlobStore(new Storage({ projectId: 'demo-none' }), 'b', prefix);
      if (inputNameProblem(object) === null) {
        seen.accepted++;
        expect(store.objectName(key)).toBe(object);
      } else {
        seen.refused++;
        expect(() => store.objectName(key)).toThrow(ShardlineError);
      }
    }
    // Both kinds of name are in the list, so both branches were exercised.
    expect(seen.accepted).toBeGreaterThan(0);
    expect(seen.refused).toBeGreaterThan(0);
  });

  test('datasetIdOf: names that slug alike still get different ids', () => {
    const ids = ['a/b.jsonl', 'a-b.jsonl', 'A-B.jsonl', 'a b.jsonl', 'a%2Fb.jsonl'].map((n) =>
      datasetIdOf({ bucket: 'b', name: `incoming/${n}` }, 1),
    );
    expect(new Set(ids).size).toBe(ids.length);
  });

  test('slugDatasetId stays linear on long runs of separators', () => {
    // The regex it replaced took 6 s on this input; the bound is loose on purpose.
    const started = process.hrtime.bigint();
    slugDatasetId('a' + '_'.repeat(200_000) + 'b' + '-'.repeat(200_000));
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeLessThan(2000);
  });

  test('checkDatasetId refuses every unsafe id a user could give, and accepts only safe ones', () => {
    for (const id of [
      '',
      '.',
      '..',
      '../x',
      'a/b',
      'a\\b',
      'a..b',
      '.a',
      '-a',
      '_a',
      'A',
      'a\u0000',
      'a\n',
      'a '.trim() + ' ',
      '\uff0e\uff0e',
      'a'.repeat(64),
      '%2e%2e',
    ]) {
      expect(() => checkDatasetId(id)).toThrow(ShardlineError);
    }
    const seen = { accepted: 0, refused: 0 };
    for (const name of names) {
      let accepted: string | undefined;
      try {
        accepted = checkDatasetId(name);
      } catch (e: unknown) {
        expect((e as ShardlineError).code).toBe('INVALID_ARGUMENT');
      }
      if (accepted === undefined) seen.refused++;
      else {
        seen.accepted++;
        expectSafeId(accepted, name);
      }
    }
    expect(seen.accepted).toBeGreaterThan(0);
    expect(seen.refused).toBeGreaterThan(0);
  });
});

/** Keys that would leave a store's root, or are otherwise not plain relative names. */
const ESCAPING_KEYS = [
  '',
  '.',
  '..',
  '../x',
  '../../etc/passwd',
  'a/../../x',
  'a/..',
  'a/../b',
  './a',
  'a/./b',
  '/etc/passwd',
  '/',
  '//x',
  'a//b',
  'a/',
  '..\\x',
  'a\\..\\..\\x',
  'C:\\x',
  'a\u0000b',
  '\u0000',
  'a\nb',
  'a\rb',
  'a\u007fb',
  `${'x'.repeat(1025)}`,
  `${'é'.repeat(513)}`,
];

describe('object keys never escape the store root', () => {
  test.each(ESCAPING_KEYS.map((k) => [JSON.stringify(k).slice(0, 40), k] as const))(
    'checkKey refuses %s',
    (_label, key) => {
      let error: unknown;
      try {
        checkKey(key);
      } catch (e: unknown) {
        error = e;
      }
      expect(error).toBeInstanceOf(ShardlineError);
      expect((error as ShardlineError).code).toBe('INVALID_ARGUMENT');
    },
  );

  /** Random keys: segments of traversal, look-alikes, encodings and plain names. */
  function randomKeys(seed: number, n: number): string[] {
    const g = rng(seed);
    const segments = [
      'a',
      'b',
      'shard_000',
      '.',
      '..',
      '...',
      '',
      ' ',
      '%2e%2e',
      '%2f',
      '\uff0e\uff0e',
      '\uff0f',
      '\u2025',
      '\\',
      '..\\',
      '\u0000',
      'é',
      '~',
      '-',
      '.hidden',
      'x'.repeat(200),
    ];
    return Array.from({ length: n }, () => {
      const parts = Array.from(
        { length: 1 + Math.floor(g() * 5) },
        () => segments[Math.floor(g() * segments.length)]!,
      );
      return (g() < 0.1 ? '/' : '') + parts.join('/');
    });
  }

  test('every key checkKey accepts is a plain relative path inside the root (5000 random keys)', () => {
    let accepted = 0;
    for (const key of randomKeys(11, 5000)) {
      let ok = true;
      try {
        checkKey(key);
      } catch {
        ok = false;
      }
      if (!ok) continue;
      accepted++;
      expect({
        key,
        normal: path.posix.normalize(key) === key,
        relative: !path.isAbsolute(key) && !key.split('/').includes('..'),
        inside: path.resolve('/root', key).startsWith('/root/'),
      }).toEqual({ key, normal: true, relative: true, inside: true });
    }
    expect(accepted).toBeGreaterThan(500);
  });

  test('a Cloud Storage store keeps every accepted key under its prefix', () => {
    const store = new GcsBlobStore(new Storage({ projectId: 'demo-none' }), 'b', 'datasets/ds-1');
    for (const key of randomKeys(12, 2000)) {
      let name: string;
      try {
        name = store.objectName(key);
      } catch {
        continue;
      }
      expect(name.startsWith('datasets/ds-1/')).toBe(true);
      expect(name.split('/')).not.toContain('..');
    }
  });

  test('LocalBlobStore writes (and deletes) only under its root, whatever the key', async () => {
    const base = path.join(dir, 'store');
    const root = path.join(base, 'root');
    // Siblings that a prefix-only check would confuse with the root.
    mkdirSync(path.join(base, 'root-evil'), { recursive: true });
    writeFileSync(path.join(base, 'root-evil', 'canary'), 'canary');
    writeFileSync(path.join(base, 'canary'), 'canary');
    const store = new LocalBlobStore(root);
    const written = new Map<string, string>();
    const keys = [...randomKeys(13, 600), ...ESCAPING_KEYS];
    for (const key of keys) {
      try {
        await store.writeAll(key, `content of ${key}`);
        written.set(key, `content of ${key}`);
      } catch (e: unknown) {
        // Refused keys, and file/folder clashes between keys: our errors, never anything else.
        expect({ key, error: e instanceof ShardlineError }).toEqual({ key, error: true });
      }
    }
    expect(written.size).toBeGreaterThan(50);
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else files.push(path.relative(base, p));
      }
    };
    walk(base);
    const outside = files.filter((f) => !f.startsWith(`root${path.sep}`));
    expect(outside.sort()).toEqual(['canary', path.join('root-evil', 'canary')]);
    // No temporary file left, and every written key reads back as itself.
    expect(files.filter((f) => f.includes('.shardline-tmp-'))).toEqual([]);
    const listed: string[] = [];
    for await (const info of store.list('')) listed.push(info.key);
    expect(listed.sort()).toEqual([...written.keys()].sort());
    for (const [key, content] of written) {
      expect((await store.readAll(key)).toString()).toBe(content);
    }
    for (const key of keys) await store.delete(key).catch(() => undefined);
    expect(readFileSync(path.join(base, 'canary'), 'utf8')).toBe('canary');
    expect(readFileSync(path.join(base, 'root-evil', 'canary'), 'utf8')).toBe('canary');
    expect(existsSync(root) ? readdirSync(root) : []).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------ logs

const SECRETS = {
  apiKey: 'sk-SECRET123abcdefghijklmnopqrstuv',
  password: 'hunter2-valid-line',
  rejectedKey: 'sk-REJECTED987zyxwvutsrqponmlkji',
  rejectedPassword: 'hunter2-rejected-line',
};

/** Fails when `logs` holds more than 1000 consecutive characters of `payload`. */
function expectNoLongRun(logs: string, payload: string, what: string): void {
  // Any run of 1001 characters contains a whole 501-character window starting at a multiple of 500.
  for (let i = 0; i + 501 <= payload.length; i += 500) {
    if (logs.includes(payload.slice(i, i + 501))) {
      throw new Error(`the logs hold more than 1000 characters of ${what} (from offset ${i})`);
    }
  }
}

describe('logs never print credentials or whole task payloads', () => {
  const bigValid = bigTask(50_000, 1);
  const bigRejected = bigTask(50_000, 2).subarray(0, 49_000); // cut: not JSON any more
  const secretValid = Buffer.from(
    JSON.stringify({
      api_key: SECRETS.apiKey,
      password: SECRETS.password,
      text: 'a task that holds credentials',
    }),
  );
  const secretRejected = Buffer.from(
    `{"password":"${SECRETS.rejectedPassword}","api_key":"${SECRETS.rejectedKey}","text":"cut`,
  );
  const input = Buffer.concat(
    [
      Buffer.from('{"text":"a small task"}'),
      bigValid,
      bigRejected,
      secretValid,
      secretRejected,
      Buffer.from('{"text":"another small task"}'),
    ].flatMap((l) => [l, Buffer.from('\n')]),
  );
  const payloads: Array<[string, string]> = [
    ['the 50 KB task', bigValid.toString()],
    ['the rejected 50 KB line', bigRejected.toString()],
  ];

  function expectClean(output: string): void {
    for (const secret of Object.values(SECRETS)) expect(output).not.toContain(secret);
    for (const [what, payload] of payloads) expectNoLongRun(output, payload, what);
  }

  test.each([
    ['--json summary, JSON logs', ['--json', '--log_format=json']],
    ['human summary, JSON logs', ['--log_format=json']],
    ['human summary, text logs', ['--log_format=text']],
  ])(
    'shardline create --verbose (%s): the dataset keeps every byte, the output none of the secrets',
    async (_label, extra) => {
      const cwd = path.join(dir, `logs-${extra.join('')}`);
      mkdirSync(cwd, { recursive: true });
      writeFileSync(path.join(cwd, 'in.jsonl'), input);
      const run = await cli(
        [
          'create',
          '--input_file',
          'in.jsonl',
          '--output_dir',
          'ds',
          '--num_shards',
          '2',
          '--verbose',
          ...extra,
        ],
        { cwd },
      );
      expect(run.code).toBe(EXIT.OK);
      expect(run.stderr).toMatch(/DEBUG.*shard written/); // --verbose did log
      expectClean(run.stdout + run.stderr);

      // The data itself is untouched: the secret task is a task, byte for byte.
      const back = await readAndCheckDataset(new LocalBlobStore(path.join(cwd, 'ds')));
      expect(back.tasks.map((t) => t.toString())).toContain(secretValid.toString());
      expect(back.tasks.map((t) => t.toString())).toContain(bigValid.toString());
      // rejected.jsonl names both bad lines with short previews that hold no credential.
      const rejected = readFileSync(path.join(cwd, 'ds', 'rejected.jsonl'), 'utf8');
      const records = rejected
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { line: number; preview: string });
      expect(records.map((r) => r.line)).toEqual([3, 5]);
      for (const r of records) expect(r.preview.length).toBeLessThanOrEqual(81);
      expectClean(rejected);
    },
  );

  test('--strict stopping at a line with credentials does not print them', async () => {
    const cwd = path.join(dir, 'logs-strict');
    mkdirSync(cwd, { recursive: true });
    writeFileSync(
      path.join(cwd, 'in.jsonl'),
      Buffer.concat([secretRejected, Buffer.from('\n'), secretValid]),
    );
    const run = await cli(
      ['create', '--input_file', 'in.jsonl', '--output_dir', 'ds', '--strict', '--verbose'],
      { cwd },
    );
    expect(run.code).toBe(EXIT.INVALID_INPUT);
    expect(run.stderr).toContain('line 1 is not a valid task');
    expectClean(run.stdout + run.stderr);
  });
});

describe('redact', () => {
  test('token counts are numbers and stay; token strings are hidden', () => {
    expect(redact({ tokens: 1234, max_tokens: 512, token: 'p1', tokens_text: 'p2' })).toEqual({
      tokens: 1234,
      max_tokens: 512,
      token: '[redacted]',
      tokens_text: '[redacted]',
    });
    expect(redact({ token: 1234 })).toEqual({ token: '[redacted]' });
  });

  test('values under keys that look secret are hidden, at any depth that is logged', () => {
    const out = JSON.stringify(
      redact({
        password: 'p1',
        api_key: 'p2',
        apiKey: 'p3',
        'x-api-key': 'p4',
        Authorization: 'p5',
        client_secret: 'p6',
        private_key: 'p7',
        accessKey: 'p8',
        cookie: 'p9',
        refresh_token: 'p10',
        credentials: { user: 'u', pass: 'p11' },
        nested: { deeper: { deepest: { password: 'p12' } } },
        list: [{ secret: 'p13' }],
        dataset_id: 'ds-1',
        shard_id: 3,
      }),
    );
    for (let i = 1; i <= 13; i++) expect(out).not.toContain(`"p${i}"`);
    expect(out).toContain('"dataset_id":"ds-1"');
    expect(out).toContain('"shard_id":3');
  });

  test('credentials inside strings are replaced where they stand', () => {
    const cases: Array<[string, string]> = [
      ['https://user:hunter2@example.com/path', 'hunter2'],
      ['request failed: Authorization: Bearer ya29.a0AfH6SMBxyzxyzxyz', 'ya29.a0AfH6SMBxyzxyzxyz'],
      ['GET /x?access_token=abc123def&alt=json', 'abc123def'],
      ['PASSWORD=hunter3 node main.js', 'hunter3'],
      ['body: {"password": "hunter4", "user": "u"}', 'hunter4'],
      ['key sk-abcdefghijklmnopqrstuvwxyz012345 leaked', 'sk-abcdefghijklmnopqrstuvwxyz012345'],
      ['AIzaSyA1234567890abcdefghijklmnopqrstuv', 'AIzaSyA1234567890abcdefghijklmnopqrstuv'],
      ['AKIAABCDEFGHIJKLMNOP', 'AKIAABCDEFGHIJKLMNOP'],
      ['-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----', 'MIIEvQIBADANBg'],
      ['-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQ (cut', 'MIIEowIBAAKCAQ'],
    ];
    for (const [text, secret] of cases) {
      expect(scrubSecrets(text)).not.toContain(secret);
      expect(JSON.stringify(redact({ message: text }))).not.toContain(secret);
    }
    // Ordinary text is left alone.
    for (const text of [
      'shard 3 of dataset ds-1 completed in 12 s',
      'line 4 is not a valid task: not a JSON object: the line is an array',
      'gs://bucket/datasets/x-1a2b3c4d/shard_000/chunk_0000.jsonl',
      'object metadata shardline-num-shards="many" must be a whole number from 1 to 100000',
    ])
      expect(scrubSecrets(text)).toBe(text);
  });

  test('long strings are cut, with their length', () => {
    const long = 'x'.repeat(10_000);
    const out = redact({ payload: long, list: [long] }) as { payload: string; list: string[] };
    expect(out.payload).toBe(`${'x'.repeat(MAX_LOG_STRING)}…(10000 chars)`);
    expect(out.list[0]).toBe(out.payload);
    // A secret that straddles the cut is not half-printed.
    const straddling = `${'y'.repeat(MAX_LOG_STRING - 10)} Bearer abcdefghijklmnopqrstuvwxyz`;
    expect(redact(straddling)).not.toMatch(/Bearer [a-z]/);
  });

  test('deep values and long arrays are bounded, never passed on raw', () => {
    let deep: unknown = { password: 'deep-secret', payload: 'z'.repeat(5000) };
    for (let i = 0; i < 10; i++) deep = { next: deep };
    const out = JSON.stringify(redact({ deep, many: Array.from({ length: 1000 }, (_, i) => i) }));
    expect(out).not.toContain('deep-secret');
    expect(out).not.toContain('z'.repeat(MAX_LOG_STRING + 1));
    expect(out).toContain('…(1000 items)');
    expect(out.length).toBeLessThan(2000);
  });

  test('errors keep name, message, code and cause, each redacted; a cause loop terminates', () => {
    const inner = new Error(`inner failure with password=hunter5 ${'w'.repeat(2000)}`);
    const outer = new ShardlineError('STORAGE', 'upload failed: Bearer abcdefghijklmnop', {
      cause: inner,
      details: { preview: '{"api_key":"sk-details0123456789abcdef"}' },
    });
    const out = redact({ error: outer }) as {
      error: { name: string; code: string; message: string; cause: { message: string } };
    };
    expect(out.error).toMatchObject({ name: 'ShardlineError', code: 'STORAGE' });
    const text = JSON.stringify(out);
    expect(text).not.toContain('hunter5');
    expect(text).not.toContain('abcdefghijklmnop');
    expect(text).not.toContain('sk-details'); // details are not logged at all
    expect(out.error.cause.message.length).toBeLessThan(MAX_LOG_STRING + 30);

    const loop = new Error('loop') as Error & { cause?: unknown };
    loop.cause = loop;
    expect(JSON.stringify(redact({ error: loop })).length).toBeLessThan(2000);
  });

  test('a logger writes redacted fields, in both formats, and a text line cannot be split by a field', () => {
    const lines: Record<'json' | 'text', string[]> = { json: [], text: [] };
    for (const format of ['json', 'text'] as const) {
      const log = createLogger({
        format,
        sink: (l) => lines[format].push(l),
        minSeverity: 'DEBUG',
      });
      log.child({ token: 'child-secret' }).debug('hello', {
        password: 'p',
        note: 'one\nfake ERROR line',
        url: 'https://u:pw9@h/',
      });
    }
    expect({ json: lines.json.length, text: lines.text.length }).toEqual({ json: 1, text: 1 });
    const json = lines.json[0]!;
    const text = lines.text[0]!;
    // Each secret is in the line, redacted, in the line's own format; its value is not.
    expect(JSON.parse(json)).toMatchObject({
      token: '[redacted]',
      password: '[redacted]',
      url: 'https://u:[redacted]@h/',
      note: 'one\nfake ERROR line',
    });
    for (const field of ['token=[redacted]', 'password=[redacted]', 'url=https://u:[redacted]@h/'])
      expect(text).toContain(` ${field}`);
    expect(text).not.toMatch(/child-secret|password=p\b|pw9/);
    expect(json).not.toMatch(/child-secret|"password":"p"|pw9/);
    // A field holding a line break is quoted: the text line stays one line.
    expect(text).toContain(' note="one\\nfake ERROR line"');
    for (const l of [json, text]) expect(l).not.toContain('\n');
  });
});
