/**
 * test/support/pubsub.ts's `pullAll`, which the functions and worker tests use to say what was
 * (and was not) published: it must return everything published before it, in order, with no
 * quiet window, and fail rather than return early when its marker cannot come back.
 */
import { PubSub } from '@google-cloud/pubsub';

import { emulatorEnv, uniqueName } from '../../support/emulators';
import { MARKER_ATTRIBUTE, pullAll, topicWithSubscription } from '../../support/pubsub';

const { projectId } = emulatorEnv();
const pubsub = new PubSub({ projectId });
afterAll(() => pubsub.close());

test('returns every message published before it, in publish order; then nothing', async () => {
  const { topic, subscription } = await topicWithSubscription(pubsub, uniqueName('pull'));
  const t = pubsub.topic(topic);
  const sent: number[] = [];
  for (let i = 0; i < 300; i++) {
    await t.publishMessage({ json: { i } });
    sent.push(i);
  }
  // A marker of some other call, delivered again, is not a message of the topic's own.
  await t.publishMessage({ data: Buffer.alloc(0), attributes: { [MARKER_ATTRIBUTE]: 'old' } });
  const got = await pullAll(projectId, topic, subscription);
  expect(got.map((m) => (m.json as { i: number }).i)).toEqual(sent);
  expect(await pullAll(projectId, topic, subscription)).toEqual([]);
});

test('fails, instead of returning what it has, when its marker cannot arrive', async () => {
  const a = await topicWithSubscription(pubsub, uniqueName('pull-a'));
  const b = await topicWithSubscription(pubsub, uniqueName('pull-b'));
  await expect(pullAll(projectId, a.topic, b.subscription, 2000)).rejects.toThrow(
    /did not arrive .* within 2000 ms/,
  );
});
