import { planShards } from '../../../core/split/plan';

test('contiguous ranges that cover every task, counts differing by at most one', () => {
  for (let n = 1; n <= 200; n++) {
    for (const s of [1, 2, 3, 7, 8, 16, 64]) {
      const plan = planShards(n, s);
      expect(plan.length).toBe(Math.min(n, s));
      let next = 0;
      for (const [k, r] of plan.entries()) {
        expect(r).toEqual({ shardId: k, firstTask: next, tasks: r.tasks });
        expect(r.tasks).toBeGreaterThanOrEqual(1);
        next += r.tasks;
      }
      expect(next).toBe(n);
      const counts = plan.map((r) => r.tasks);
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
  }
});

test("the seed's 103 tasks over 8 shards keep all 103 (the original wrote 96)", () => {
  const plan = planShards(103, 8);
  expect(plan.map((r) => r.tasks)).toEqual([12, 13, 13, 13, 13, 13, 13, 13]);
});

test('fewer tasks than shards: one task per shard, none empty', () => {
  expect(planShards(3, 8)).toEqual([
    { shardId: 0, firstTask: 0, tasks: 1 },
    { shardId: 1, firstTask: 1, tasks: 1 },
    { shardId: 2, firstTask: 2, tasks: 1 },
  ]);
});

test('no tasks, or a bad shard count, is an error', () => {
  expect(() => planShards(0, 8)).toThrow(
    expect.objectContaining({ code: 'INVALID_INPUT' }) as Error,
  );
  expect(() => planShards(5, 0)).toThrow(
    expect.objectContaining({ code: 'INVALID_ARGUMENT' }) as Error,
  );
});
