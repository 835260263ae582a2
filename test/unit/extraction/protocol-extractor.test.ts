/**
 * `ProtocolExtractor` against a child process (test/support/fake-extractor.ts): the rows it
 * hands over are the child's, at every token or at the positions asked for; a failed child is
 * replaced by a fresh one on the next batch; `close()` ends the session with the child gone.
 * (Through the whole worker: test/unit/worker/extractor-failures.test.ts and, with the real
 * Python extractor, backends-e2e.test.ts.)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { f16BitsToNumber } from '../../../worker/extraction/fp16';
import type { ProtocolExtractorOptions } from '../../../worker/extraction/protocol-extractor';
import { ProtocolExtractor } from '../../../worker/extraction/protocol-extractor';
import {
  FAKE_WEIGHTS_SHA256,
  fakeChildren,
  fakeRow,
  processAlive,
  writeFakeExtractor,
} from '../../support/fake-extractor';
import { makeTempDir } from '../../support/tmp';

let root: string;
let cleanup: () => void;
let launcher: string;

beforeAll(() => {
  ({ dir: root, cleanup } = makeTempDir('protocol-extractor'));
  launcher = writeFakeExtractor(root);
  writeFileSync(path.join(root, 'config.json'), '{}\n');
});
afterAll(() => cleanup());

let runs = 0;
/** Options for a fake that follows `plan`, and its state folder. */
function fake(
  plan: string,
  extra: Partial<ProtocolExtractorOptions> = {},
): { options: ProtocolExtractorOptions; state: string } {
  const state = path.join(root, `state-${++runs}`);
  mkdirSync(state);
  return {
    state,
    options: {
      command: [process.execPath, launcher, '--state', state, '--plan', plan, '--hidden', '4'],
      modelPath: root,
      layers: [1, 0],
      computeDtype: 'float32',
      outputDtype: 'float16',
      maxBatchSize: 4,
      maxBatchTokens: 1024,
      maxSeqLength: 256,
      backend: 'command',
      ...extra,
    },
  };
}

/** The rows `fakeRow` gives for `tokens` at `positions`, layer by layer, as numbers. */
function expected(layer: number, tokens: number[], positions: number[]): number[] {
  return positions.flatMap((p) => [0, 1, 2, 3].map((d) => fakeRow(layer, tokens[p]!, p, d)));
}

test('ready: what the child said, layers ascending; rows at every token and at chosen positions', async () => {
  const { options } = fake('ok');
  const x = await ProtocolExtractor.open(options);
  try {
    expect(x.info).toMatchObject({
      backend: 'command:fake',
      modelSha256: FAKE_WEIGHTS_SHA256,
      layers: [0, 1],
      hiddenSize: 4,
      numLayers: 2,
      dtype: 'float16',
      residualMethod: 'hidden_states',
      executionProviders: ['cpu:0 fake'],
    });
    const a = [5, 9, 200];
    const b = [77];
    const all = await x.extract([a, b]);
    expect(all.rowCounts).toEqual([3, 1]);
    for (const l of [0, 1]) {
      expect(Array.from(all.rows[l]![0]!, f16BitsToNumber)).toEqual(expected(l, a, [0, 1, 2]));
      expect(Array.from(all.rows[l]![1]!, f16BitsToNumber)).toEqual(expected(l, b, [0]));
    }
    const some = await x.extract([a, b], [[0, 2], []]);
    expect(some.rowCounts).toEqual([2, 0]);
    expect(Array.from(some.rows[1]![0]!, f16BitsToNumber)).toEqual(expected(1, a, [0, 2]));
    expect(some.rows[1]![1]!.length).toBe(0);
  } finally {
    await x.close();
  }
});

test('a child that died is replaced on the next batch, which succeeds', async () => {
  const { options, state } = fake('die@2');
  const x = await ProtocolExtractor.open(options);
  try {
    await x.extract([[1, 2]]);
    await expect(x.extract([[3, 4]])).rejects.toMatchObject({
      code: 'MODEL',
      message: expect.stringMatching(/the extractor exited \(code 1\)/) as unknown,
    });
    const again = await x.extract([[3, 4]]);
    expect(Array.from(again.rows[0]![0]!, f16BitsToNumber)).toEqual(expected(0, [3, 4], [0, 1]));
    const children = fakeChildren(state);
    expect(children.map((c) => c.mode)).toEqual(['die@2', 'ok']);
  } finally {
    await x.close();
  }
});

test('close() ends the session: the child answers shutdown and has exited when it resolves', async () => {
  const { options, state } = fake('ok');
  const x = await ProtocolExtractor.open(options);
  await x.extract([[1]]);
  await x.close();
  const [child] = fakeChildren(state);
  expect(processAlive(child!.pid)).toBe(false);
  await expect(x.extract([[1]])).rejects.toMatchObject({ code: 'INTERNAL' });
});

test('a child whose ready claims layers the model does not have is not used', async () => {
  // The fake echoes the layers asked for, whatever its model has (2 layers here).
  const { options } = fake('ok', { layers: [0, 1, 2] });
  await expect(ProtocolExtractor.open(options)).rejects.toMatchObject({
    code: 'MODEL',
    message: expect.stringMatching(
      /did not start: layers \[0,1,2\] are not all among the model's 2/,
    ) as unknown,
  });
});
