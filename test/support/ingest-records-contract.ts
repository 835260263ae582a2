/**
 * The ingest-records contract: every `IngestRecords` implementation passes these tests (in
 * memory in test/unit/ingest, Firestore against the emulator in test/integration/ingest). They
 * assert what the ingest relies on: one record per upload however often its event arrives,
 * versions per object name, a stalled ingest taken over and given up on after its attempts,
 * and exactly one step that completes each set of steps.
 */
import type { IngestDraft, IngestRecords } from '../../core/ingest/records';
import { FakeClock } from './ledger-fixtures';

const STALE_MS = 180_000;

function draft(
  object: string,
  generation: string,
  mode: 'direct' | 'fanout' = 'direct',
): IngestDraft {
  return {
    ingest_id: `${object.replace(/\W/g, '_')}-${generation}`,
    bucket: 'b',
    object,
    generation,
    size: 100,
    event_id: 'e',
    num_shards: 2,
    chunk_size_mb: 1,
    mode,
    name: (version) => ({
      dataset_id: version === 1 ? 'ds' : `ds-v${version}`,
      dataset_uri: `gs://b/datasets/ds${version === 1 ? '' : `-v${version}`}`,
    }),
  };
}

/** Declares the contract suite; `open` gives each test a fresh, empty store on `clock`. */
export function ingestRecordsContract(
  name: string,
  open: (clock: FakeClock) => Promise<IngestRecords>,
): void {
  describe(`IngestRecords contract: ${name}`, () => {
    let clock: FakeClock;
    let records: IngestRecords;
    beforeEach(async () => {
      clock = new FakeClock();
      records = await open(clock);
    });

    test('begin creates one record; the same upload again finds it busy, then finished', async () => {
      const first = await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3);
      expect(first.kind).toBe('started');
      expect(first.record).toMatchObject({
        version: 1,
        state: 'running',
        phase: 'split',
        attempts: 0,
      });
      expect((await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3)).kind).toBe('busy');
      await records.complete(first.record.ingest_id, {
        total_tasks: 1,
        num_shards: 1,
        input_lines: 1,
        blank_lines: 0,
        rejected_lines: 0,
        bytes: 10,
      });
      const again = await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3);
      expect(again.kind).toBe('finished');
      expect(again.record).toMatchObject({ state: 'completed', phase: 'done' });
      expect(await records.recent(10)).toHaveLength(1);
    });

    test('a new generation of the same object name gets the next version', async () => {
      await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3);
      clock.advance(1);
      const second = await records.begin(draft('incoming/a.jsonl', '2'), STALE_MS, 3);
      expect(second.record).toMatchObject({ version: 2, dataset_id: 'ds-v2' });
      const other = await records.begin(draft('incoming/b.jsonl', '1'), STALE_MS, 3);
      expect(other.record.version).toBe(1);
      expect((await records.findByDataset('ds-v2')).map((r) => r.generation)).toEqual(['2']);
    });

    test('a stalled record is taken over with attempts + 1, and failed when they run out', async () => {
      const { record } = await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3);
      clock.advance(STALE_MS);
      const taken = await records.begin(draft('incoming/a.jsonl', '1'), STALE_MS, 3);
      expect(taken.kind).toBe('takeover');
      expect(taken.record.attempts).toBe(1);
      clock.advance(STALE_MS + 1);
      expect(await records.takeOverStalled(STALE_MS, 2)).toEqual([]);
      const failed = await records.get(record.ingest_id);
      expect(failed).toMatchObject({ state: 'failed' });
      expect(failed!.error).toMatch(/gave up after 2 attempts/);
    });

    test('takeOverStalled leaves fresh and finished records alone', async () => {
      const fresh = await records.begin(draft('incoming/f.jsonl', '1'), STALE_MS, 5);
      const old = await records.begin(draft('incoming/o.jsonl', '1'), STALE_MS, 5);
      await records.fail(old.record.ingest_id, 'bad', { line: 1, reason: 'r', preview: 'p' });
      clock.advance(STALE_MS - 1);
      expect(await records.takeOverStalled(STALE_MS, 5)).toEqual([]);
      clock.advance(2);
      const taken = await records.takeOverStalled(STALE_MS, 5);
      expect(taken.map((r) => r.ingest_id)).toEqual([fresh.record.ingest_id]);
      expect((await records.get(old.record.ingest_id))!.bad_line).toEqual({
        line: 1,
        reason: 'r',
        preview: 'p',
      });
    });

    test('exactly one step completes a set, however often each is reported', async () => {
      const { record } = await records.begin(
        draft('incoming/big.jsonl', '1', 'fanout'),
        STALE_MS,
        3,
      );
      const id = record.ingest_id;
      const spans = [0, 1, 2].map((r) => ({ start: r * 10, end: r * 10 + 10 }));
      await records.update(id, { ranges: spans });
      const flips = await Promise.all([0, 1, 2, 1, 0, 2].map((r) => records.rangeDone(id, r)));
      expect(flips.filter(Boolean)).toHaveLength(1);
      expect(await records.get(id)).toMatchObject({ phase: 'write', ranges_done: 3 });
      expect(await records.isStepDone(id, 'ranges', 1)).toBe(true);
      expect(await records.isStepDone(id, 'shards', 0)).toBe(false);
      // A range reported after the phase moved on changes nothing.
      expect(await records.rangeDone(id, 0)).toBe(false);
      await records.update(id, { shards: 2 });
      await records.saveCursor(id, 1, {
        planIndex: 0,
        position: { offset: 5, line: 1, task: 1 },
        chunks: [],
      });
      expect(await records.getCursor(id, 1)).toMatchObject({ position: { offset: 5 } });
      expect(await records.getCursor(id, 0)).toBeNull();
      expect(await records.shardDone(id, 0)).toBe(false);
      expect(await records.shardDone(id, 1)).toBe(true);
      expect(await records.get(id)).toMatchObject({ phase: 'finalize', shards_done: 2 });
    });
  });
}
