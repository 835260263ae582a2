/**
 * Integration tests run under test/emulators/with-emulators.sh, which exports where the
 * emulators listen. Each test namespaces what it creates with `uniqueName`.
 */
import { randomBytes } from 'node:crypto';

/** The emulator endpoints; fails loudly when the suite was started without the emulators. */
export function emulatorEnv(): {
  firestore: string;
  pubsub: string;
  storage: string;
  projectId: string;
} {
  const firestore = process.env.FIRESTORE_EMULATOR_HOST;
  const pubsub = process.env.PUBSUB_EMULATOR_HOST;
  const storage = process.env.STORAGE_EMULATOR_HOST;
  const projectId = process.env.GCLOUD_PROJECT;
  if (!firestore || !pubsub || !storage || !projectId) {
    throw new Error(
      'integration tests need the emulators: run `npm run test:integration` (or `npm test`), which starts them',
    );
  }
  if (!projectId.startsWith('demo-'))
    throw new Error(`refusing to run against project ${projectId}: not a demo- project`);
  return { firestore, pubsub, storage, projectId };
}

/** A name unique to this test run, safe for buckets, topics, dataset ids and collection roots. */
export function uniqueName(label: string): string {
  return `${label}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}
