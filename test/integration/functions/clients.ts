/**
 * The emulator clients a functions test file uses (Storage, Pub/Sub, Firestore, under the
 * emulators' demo project), closed after its tests.
 */
import { Firestore } from '@google-cloud/firestore';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';

import { emulatorEnv } from '../../support/emulators';

/** Creates the clients and closes them after the file's tests (call at the top level). */
export function emulatorClients(): {
  projectId: string;
  storage: Storage;
  pubsub: PubSub;
  firestore: Firestore;
} {
  const { projectId } = emulatorEnv();
  const storage = new Storage({ projectId });
  const pubsub = new PubSub({ projectId });
  const firestore = new Firestore({ projectId });
  afterAll(async () => {
    await pubsub.close();
    await firestore.terminate();
  });
  return { projectId, storage, pubsub, firestore };
}
