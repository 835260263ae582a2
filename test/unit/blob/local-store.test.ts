import { LocalBlobStore } from '../../../core/blob/local';
import { blobStoreContract } from '../../support/blob-contract';
import { makeTempDir } from '../../support/tmp';

const dirs: Array<() => void> = [];
afterAll(() => dirs.forEach((cleanup) => cleanup()));

blobStoreContract(
  'local filesystem',
  () => {
    const { dir, cleanup } = makeTempDir('blob');
    dirs.push(cleanup);
    return Promise.resolve(new LocalBlobStore(dir));
  },
  { enforcesCreateOnly: true },
);
