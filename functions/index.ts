/**
 * The Cloud Functions of shardline, registered by name with the Functions Framework. Each is a
 * thin entry point over core/ (infra/deploy.sh deploys them with these entry points).
 */
import * as ff from '@google-cloud/functions-framework';

import { ingest } from './ingest';
import { ingestStep } from './ingest-step';
import { progress } from './progress';
import { reap } from './reap';

ff.cloudEvent('ingest', async (ce: ff.CloudEvent<unknown>) => void (await ingest(ce)));
ff.cloudEvent('ingestStep', async (ce: ff.CloudEvent<unknown>) => void (await ingestStep(ce)));
ff.cloudEvent('reap', async (ce: ff.CloudEvent<unknown>) => void (await reap(ce)));
ff.cloudEvent('progress', async (ce: ff.CloudEvent<unknown>) => void (await progress(ce)));

export { ingest, ingestStep, progress, reap };
