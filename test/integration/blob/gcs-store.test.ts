import { Storage } from '@google-cloud/storage';

import { GcsBlobStore } from '../../../core/blob/gcs';
import { blobStoreContract } from '../../support/blob-contract';
import { emulatorEnv, uniqueName } from '../../support/emulators';

const { projectId } = emulatorEnv();
const storage = new Storage({ projectId });

// The Storage emulator ignores ifGenerationMatch (docs/notes/emulators.md §3), so createOnly is
// covered by the local store's run of the contract and by unit tests of the callers; and it
// stamps generations with its millisecond clock (Cloud Storage's are unique per write), so the
// generation tests wait for that clock to move on between writes of one key.
blobStoreContract(
  'Cloud Storage (emulator)',
  () => Promise.resolve(new GcsBlobStore(storage, 'shardline-test', uniqueName('contract'))),
  { enforcesCreateOnly: false, generationIsMsClock: true },
);
