/** The Firestore ingest records pass the contract, against the emulator. */
import { Firestore } from '@google-cloud/firestore';

import { FirestoreIngestRecords } from '../../../core/ingest/firestore-records';
import { emulatorEnv, uniqueName } from '../../support/emulators';
import { ingestRecordsContract } from '../../support/ingest-records-contract';

const { projectId } = emulatorEnv();
const db = new Firestore({ projectId });
afterAll(() => db.terminate());

ingestRecordsContract('Firestore (emulator)', (clock) => {
  const ns = uniqueName('ingest-records');
  return Promise.resolve(
    new FirestoreIngestRecords(db, clock, { ingests: `${ns}-ingests`, objects: `${ns}-objects` }),
  );
});
