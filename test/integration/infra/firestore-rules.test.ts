/**
 * infra/firestore.rules, as the Firestore emulator loads it (test/emulators/with-emulators.sh
 * starts it with --rules=infra/firestore.rules): a client without IAM credentials, signed in or
 * not, can neither read nor write the ledger and ingest collections. The emulator's admin
 * credential (`Authorization: Bearer owner`, what the server SDKs get) is allowed, which shows
 * the refusals come from the rules and not from a broken emulator.
 */
import { emulatorEnv, uniqueName } from '../../support/emulators';

const { firestore, projectId } = emulatorEnv();
const documents = `http://${firestore}/v1/projects/${projectId}/databases/(default)/documents`;
const OWNER = { Authorization: 'Bearer owner' };

/** An unsigned Firebase Auth ID token: the emulator accepts it as a signed-in end user. */
function endUserToken(): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({
    iss: `https://securetoken.google.com/${projectId}`,
    aud: projectId,
    sub: 'end-user-1',
    user_id: 'end-user-1',
    auth_time: now,
    iat: now,
    exp: now + 3600,
    firebase: { sign_in_provider: 'password' },
  })}.`;
}

const CLIENTS: [string, Record<string, string>][] = [
  ['an unauthenticated client', {}],
  ['a signed-in end user', { Authorization: `Bearer ${endUserToken()}` }],
];

async function call(
  method: string,
  url: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const response = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, json: text ? (JSON.parse(text) as unknown) : null };
}

const fields = (status: string) => ({
  fields: { status: { stringValue: status }, epoch: { integerValue: '1' } },
});

describe('infra/firestore.rules in the Firestore emulator', () => {
  const id = uniqueName('rules');
  const paths = [
    `datasets/${id}`,
    `datasets/${id}/shards/shard_000`,
    `datasets/${id}/shards/shard_000/parts/part_00000`,
    `ingests/${id}`,
    `ingests/${id}/ranges/0`,
    `ingests/${id}/shards/0`,
    `ingest_objects/${id}`,
  ];

  beforeAll(async () => {
    for (const p of paths) {
      const created = await call('PATCH', `${documents}/${p}`, OWNER, fields('available'));
      expect(created.status).toBe(200);
    }
  });

  afterAll(async () => {
    for (const p of [...paths].reverse()) await call('DELETE', `${documents}/${p}`, OWNER);
  });

  test('the admin credential reads and writes the ledger (the emulator works)', async () => {
    for (const p of paths) {
      const read = await call('GET', `${documents}/${p}`, OWNER);
      expect(read.status).toBe(200);
      expect(read.json).toMatchObject({ fields: { status: { stringValue: 'available' } } });
    }
  });

  test.each(CLIENTS)('%s cannot read a ledger or ingest document', async (_who, headers) => {
    for (const p of paths) {
      const read = await call('GET', `${documents}/${p}`, headers);
      expect([p, read.status]).toEqual([p, 403]);
    }
  });

  test.each(CLIENTS)('%s cannot list or query them', async (_who, headers) => {
    const list = await call('GET', `${documents}/datasets`, headers);
    expect(list.status).toBe(403);
    const shardsOfAllDatasets = await call('POST', `${documents}:runQuery`, headers, {
      structuredQuery: {
        from: [{ collectionId: 'shards', allDescendants: true }],
        where: {
          fieldFilter: {
            field: { fieldPath: 'status' },
            op: 'EQUAL',
            value: { stringValue: 'available' },
          },
        },
      },
    });
    expect(shardsOfAllDatasets.status).toBe(403);
  });

  test.each(CLIENTS)(
    '%s cannot create, update or delete them, and nothing changes',
    async (_who, headers) => {
      for (const p of paths) {
        const update = await call('PATCH', `${documents}/${p}`, headers, fields('completed'));
        expect([p, 'update', update.status]).toEqual([p, 'update', 403]);
        const remove = await call('DELETE', `${documents}/${p}`, headers);
        expect([p, 'delete', remove.status]).toEqual([p, 'delete', 403]);
      }
      const create = await call('PATCH', `${documents}/datasets/${id}-new`, headers, fields('x'));
      expect(create.status).toBe(403);
      const commit = await call('POST', `${documents}:commit`, headers, {
        writes: [
          {
            update: {
              name: `projects/${projectId}/databases/(default)/documents/datasets/${id}/shards/shard_001`,
              ...fields('in_use'),
            },
          },
        ],
      });
      expect(commit.status).toBe(403);

      for (const p of paths) {
        const read = await call('GET', `${documents}/${p}`, OWNER);
        expect(read.json).toMatchObject({ fields: { status: { stringValue: 'available' } } });
      }
      const notCreated = await call('GET', `${documents}/datasets/${id}-new`, OWNER);
      expect(notCreated.status).toBe(404);
    },
  );
});
