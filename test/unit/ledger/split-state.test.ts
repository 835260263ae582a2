/**
 * The split transitions of the shard state machine (core/ledger/shard-state.ts), pure: where a
 * unit may be split, what a split writes, how a holder's reservation protects its work in
 * flight, how a unit's end fences its commits, and how the last of several units completes the
 * shard. The ledgers' contract suite checks the same through both ledgers, in transactions.
 */
import { errorCode } from '../../../core/errors';
import type { Claim, PartInput } from '../../../core/ledger/ledger';
import type { ShardState, ShardUnits } from '../../../core/ledger/shard-state';
import {
  applyClaim,
  applyCommitPart,
  applyComplete,
  applyExpiry,
  applyHeartbeat,
  applyReset,
  applySplit,
  buildStatus,
  claimOf,
  newShardState,
  splitCandidates,
  splitFloor,
  splitPoint,
  tasksPerPart,
  unitEnd,
  unitStart,
} from '../../../core/ledger/shard-state';
import { T0 } from '../../support/ledger-fixtures';

const LEASE = 60_000;
const DS = 'ds';

/** Shard 0: tasks 100-199, claimed by `w1` at T0. */
function held(worker = 'w1'): ShardState {
  const s = newShardState(
    {
      shard_id: 0,
      directory: 'shard_000',
      status: 'available',
      total_tasks: 100,
      first_task_index: 100,
      num_chunks: 2,
      total_bytes: 1000,
    },
    3,
    T0,
  );
  return applyClaim(s, worker, T0, LEASE);
}

function part(index: number, first: number, next: number, nextSample = 0): PartInput {
  return {
    part_index: index,
    name: `p${index}`,
    first_task_index: first,
    first_sample: 0,
    last_task_index: nextSample > 0 ? next : next - 1,
    next_task_index: next,
    next_sample: nextSample,
    samples: 8,
    bytes: 100,
    checksums: {},
    fingerprint: 'run-a',
  };
}

function claimFor(s: ShardState, unit = 0): Claim {
  return claimOf({ dataset_id: DS, shard_id: 0, unit }, s);
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e: unknown) {
    return errorCode(e);
  }
  throw new Error('expected a throw');
}

describe('splitPoint', () => {
  test('halves what lies past the committed position of a held unit', () => {
    const s = held();
    expect(splitPoint(s)).toBe(150);
    const committed = applyCommitPart(s, claimFor(s), part(0, 100, 120), null, T0).state;
    expect(splitPoint(committed)).toBe(160);
  });

  test('never cuts below the holder’s reservation; a part ending inside a task moves the floor past it', () => {
    const s = applyHeartbeat(held(), T0 + 1, undefined, 170);
    expect(splitFloor(s)).toBe(170);
    expect(splitPoint(s)).toBe(170);
    const mid = applyCommitPart(held(), claimFor(held()), part(0, 100, 140, 3), null, T0).state;
    expect(splitFloor(mid)).toBe(141);
  });

  test('splits only when the remainder past the floor holds two sides’ worth', () => {
    const s = held();
    const reserved = applyHeartbeat(s, T0, undefined, 196);
    expect(splitPoint(reserved)).toBe(196); // 4 tasks left: 2 + 2
    expect(splitPoint(applyHeartbeat(s, T0, undefined, 197))).toBeNull();
    // A side is at least one committed part's worth of tasks: 10 per part here.
    const parts = applyCommitPart(s, claimFor(s), part(0, 100, 110), null, T0).state;
    expect(splitPoint(applyHeartbeat(parts, T0, undefined, 180))).toBe(180);
    expect(splitPoint(applyHeartbeat(parts, T0, undefined, 181))).toBeNull();
    expect(splitPoint(s, 30)).toBe(150);
    expect(splitPoint(s, 51)).toBeNull();
  });

  /**
   * Shard 0 (tasks 100-199) whose unit 0 committed a part of 10 tasks, then was split at 155:
   * unit 1 (tasks 155-199) is held by `w2` and has committed nothing yet.
   */
  function freshUnitOfMeasuredShard(): { unit0: ShardState; unit1: ShardState } {
    const s = held();
    const measured = applyCommitPart(s, claimFor(s), part(0, 100, 110), null, T0).state;
    const at = splitPoint(measured)!;
    expect(at).toBe(155);
    const split = applySplit(new Map([[0, measured]]), 0, at, 'w2', T0 + 1, LEASE);
    return { unit0: split.writes.get(0)!, unit1: split.state };
  }

  test('a unit split off before committing a part keeps sides of one part’s worth as the unit it came from measured it', () => {
    const { unit1 } = freshUnitOfMeasuredShard();
    expect(unit1).toMatchObject({ parts_committed: 0, split_tasks_per_part: 10 });
    expect(tasksPerPart(unit1)).toBe(10);
    // 19 tasks past its holder's reservation: under two parts' worth, not split (the minimum
    // of 2 tasks alone would have split it 9 + 10).
    expect(splitPoint(applyHeartbeat(unit1, T0 + 2, undefined, 181))).toBeNull();
    // 20 tasks: two parts' worth, split at the reservation.
    expect(splitPoint(applyHeartbeat(unit1, T0 + 2, undefined, 180))).toBe(180);
    // Nothing reserved: halves its 45 tasks.
    expect(splitPoint(unit1)).toBe(178);
    // A larger minimum still wins.
    expect(splitPoint(unit1, 23)).toBeNull();
  });

  test('the part size passes on to splits of splits, and the unit’s own parts replace it', () => {
    const { unit0, unit1 } = freshUnitOfMeasuredShard();
    const units: ShardUnits = new Map([
      [0, unit0],
      [1, unit1],
    ]);
    const grandchild = applySplit(units, 1, 178, 'w3', T0 + 2, LEASE).state;
    expect(grandchild).toMatchObject({ split_from: 1, split_tasks_per_part: 10 });
    expect(splitPoint(applyHeartbeat(grandchild, T0 + 3, undefined, 181))).toBeNull();
    // Unit 1 commits a part of 5 tasks: its own measure now sizes its sides.
    const own = applyCommitPart(unit1, claimFor(unit1, 1), part(0, 155, 160), null, T0 + 3);
    expect(tasksPerPart(own.state)).toBe(5);
    expect(splitPoint(applyHeartbeat(own.state, T0 + 4, undefined, 190))).toBe(190);
    expect(splitPoint(applyHeartbeat(own.state, T0 + 4, undefined, 191))).toBeNull();
    // A unit split off before anything measured a part has no part size to keep.
    expect(applySplit(new Map([[0, held()]]), 0, 150, 'w2', T0, LEASE).state).toMatchObject({
      split_tasks_per_part: null,
    });
    // A reset that discards the parts forgets the measure with them; one that keeps them, not.
    expect(applyReset(units, 'op', T0 + 5, false).get(1)!.split_tasks_per_part).toBe(10);
    expect(applyReset(units, 'op', T0 + 5, true).get(1)!.split_tasks_per_part).toBeNull();
  });

  test('candidates: a fresh unit of a measured shard is offered only with two parts’ worth past its reservation', () => {
    const { unit0, unit1 } = freshUnitOfMeasuredShard();
    const rank = (reserveTo: number) =>
      splitCandidates(
        [
          // Unit 0 (tasks 110-154 left) reserved to its end: nothing to give.
          { shard_id: 0, unit: 0, state: applyHeartbeat(unit0, T0 + 2, undefined, 155) },
          { shard_id: 0, unit: 1, state: applyHeartbeat(unit1, T0 + 2, undefined, reserveTo) },
        ],
        'w9',
      ).map((c) => [c.shard_id, c.unit, c.at, c.tasks]);
    expect(rank(181)).toEqual([]);
    expect(rank(180)).toEqual([[0, 1, 180, 20]]);
  });

  test('available, completed and failed units are not split', () => {
    const s = held();
    expect(splitPoint({ ...s, status: 'available' })).toBeNull();
    expect(splitPoint({ ...s, status: 'completed' })).toBeNull();
    expect(splitPoint({ ...s, status: 'failed' })).toBeNull();
  });

  test('candidates: the largest remainder first, never the splitter’s own unit or another run’s', () => {
    const big = held('a');
    const small = applyHeartbeat(held('b'), T0, undefined, 180);
    const other = { ...held('c'), run_fingerprint: 'run-b' };
    const ranked = splitCandidates(
      [
        { shard_id: 1, unit: 0, state: small },
        { shard_id: 2, unit: 0, state: big },
        { shard_id: 3, unit: 0, state: other },
        { shard_id: 4, unit: 0, state: held('me') },
      ],
      'me',
      { fingerprint: 'run-a' },
    );
    expect(ranked.map((c) => [c.shard_id, c.at, c.tasks])).toEqual([
      [2, 150, 50],
      [1, 180, 20],
    ]);
  });
});

describe('applySplit', () => {
  test('moves the unit’s end and creates a held unit for the rest; the holder keeps its claim', () => {
    const s = applyHeartbeat(held(), T0 + 1, undefined, 130);
    const units: ShardUnits = new Map([[0, s]]);
    const { writes, unit, state } = applySplit(units, 0, 150, 'w2', T0 + 5, LEASE);
    expect(unit).toBe(1);
    const from = writes.get(0)!;
    expect(from).toMatchObject({
      status: 'in_use',
      assigned_to: 'w1',
      epoch: s.epoch,
      lease_expires_at: s.lease_expires_at,
      reserved_task_index: 130,
      end_task_index: 150,
      unit_count: 2,
    });
    expect(unitEnd(from)).toBe(150);
    expect(from.history.at(-1)).toMatchObject({ kind: 'split', worker: 'w2', epoch: s.epoch });
    expect(state).toBe(writes.get(1));
    expect(state).toMatchObject({
      status: 'in_use',
      assigned_to: 'w2',
      epoch: 1,
      lease_expires_at: T0 + 5 + LEASE,
      start_task_index: 150,
      end_task_index: 200,
      next_task_index: 150,
      split_from: 0,
      attempts: 0,
      max_attempts: 3,
      parts_committed: 0,
      unit_count: 0,
    });
    expect([unitStart(state), unitEnd(state)]).toEqual([150, 200]);
    expect(claimOf({ dataset_id: DS, shard_id: 0, unit }, state)).toMatchObject({
      unit: 1,
      worker_id: 'w2',
      epoch: 1,
      end_task_index: 200,
    });
    // The holder, still the holder, commits up to its new end and is refused past it.
    const c = claimFor(s);
    const ok = applyCommitPart(from, c, part(0, 100, 150), null, T0 + 6);
    expect(ok.record).toMatchObject({ unit: 0, next_task_index: 150 });
    const refused = (() => {
      try {
        applyCommitPart(from, c, part(0, 100, 151), null, T0 + 6);
      } catch (e: unknown) {
        return e as { code: string; details: Record<string, unknown> };
      }
      throw new Error('expected PAST_END');
    })();
    expect(refused.code).toBe('PAST_END');
    expect(refused.details.end_task_index).toBe(150);
  });

  test('a split of a split numbers the next unit from unit 0’s count and writes unit 0', () => {
    const first = applySplit(new Map([[0, held()]]), 0, 150, 'w2', T0, LEASE);
    const units = new Map(first.writes);
    const second = applySplit(units, 1, 175, 'w3', T0 + 1, LEASE);
    expect(second.unit).toBe(2);
    expect(second.writes.get(0)!.unit_count).toBe(3);
    expect(unitEnd(second.writes.get(1)!)).toBe(175);
    expect([unitStart(second.state), unitEnd(second.state), second.state.split_from]).toEqual([
      175, 200, 1,
    ]);
  });

  test('refuses a point below the floor, at the end, or on a unit nobody holds', () => {
    const s = applyHeartbeat(held(), T0, undefined, 160);
    expect(code(() => applySplit(new Map([[0, s]]), 0, 159, 'w2', T0, LEASE))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(code(() => applySplit(new Map([[0, s]]), 0, 200, 'w2', T0, LEASE))).toBe(
      'INVALID_ARGUMENT',
    );
    const free = { ...s, status: 'available' as const };
    expect(code(() => applySplit(new Map([[0, free]]), 0, 170, 'w2', T0, LEASE))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  test('an expired holder keeps its reservation and may still renew and learn its end', () => {
    const s = applyHeartbeat(held(), T0, undefined, 120);
    const late = T0 + 2 * LEASE;
    const { writes } = applySplit(new Map([[0, s]]), 0, splitPoint(s)!, 'w2', late, LEASE);
    const from = writes.get(0)!;
    expect(unitEnd(from)).toBe(150);
    const renewed = applyHeartbeat(from, late + 1, undefined, 190);
    expect(renewed.reserved_task_index).toBe(150);
    expect(claimOf({ dataset_id: DS, shard_id: 0 }, renewed).end_task_index).toBe(150);
    // Once another worker takes it, the old holder is fenced as ever.
    const retaken = applyClaim(from, 'w3', late + 2, LEASE);
    expect(retaken).toMatchObject({ epoch: s.epoch + 1, reserved_task_index: null });
    expect(applyExpiry(from, late + 2).reserved_task_index).toBeNull();
  });
});

describe('reservations', () => {
  test('grow with heartbeats, never shrink, and stop at the unit’s end', () => {
    let s = applyHeartbeat(held(), T0, undefined, 120);
    expect(s.reserved_task_index).toBe(120);
    s = applyHeartbeat(s, T0 + 1, undefined, 110);
    expect(s.reserved_task_index).toBe(120);
    s = applyHeartbeat(s, T0 + 2);
    expect(s.reserved_task_index).toBe(120);
    s = applyHeartbeat(s, T0 + 3, undefined, 500);
    expect(s.reserved_task_index).toBe(200);
  });
});

describe('completing a split shard', () => {
  /** Shard 0 split at 150: unit 0 held by w1, unit 1 by w2; each commits its range. */
  function twoUnits(): { units: Map<number, ShardState>; c0: Claim; c1: Claim } {
    const split = applySplit(new Map([[0, held()]]), 0, 150, 'w2', T0, LEASE);
    const c0 = claimFor(split.writes.get(0)!);
    const c1 = claimFor(split.state, 1);
    const u0 = applyCommitPart(split.writes.get(0)!, c0, part(0, 100, 150), null, T0).state;
    const u1 = applyCommitPart(split.state, c1, part(0, 150, 200), null, T0).state;
    return {
      units: new Map([
        [0, u0],
        [1, u1],
      ]),
      c0,
      c1,
    };
  }

  test('the first unit completes alone; the last is refused without the manifest, then completes the shard with it', () => {
    const { units, c0, c1 } = twoUnits();
    const first = applyComplete(units, c1, undefined, T0 + 1, { requireManifest: true })!;
    expect(first.shardCompleted).toBe(false);
    expect(first.writes.get(1)!.status).toBe('completed');
    expect(first.writes.get(0)!).toMatchObject({ status: 'in_use', units_completed: 1 });
    const after = new Map([...units, ...first.writes]);
    expect(code(() => applyComplete(after, c0, undefined, T0 + 2, { requireManifest: true }))).toBe(
      'MANIFEST_REQUIRED',
    );
    expect(
      code(() => applyComplete(after, c0, { parts: 1, samples: 16, bytes: 200 }, T0 + 2)),
    ).toBe('INVALID_ARGUMENT');
    const last = applyComplete(after, c0, { parts: 2, samples: 16, bytes: 200 }, T0 + 2)!;
    expect(last.shardCompleted).toBe(true);
    expect(last.writes.get(0)).toMatchObject({
      status: 'completed',
      units_completed: 2,
      manifest: { parts: 2 },
    });
    // Retried by the same claim: nothing to write.
    expect(applyComplete(new Map([...after, ...last.writes]), c0, undefined, T0 + 3)).toBeNull();
  });

  test('a manifest before the other units are completed is refused', () => {
    const { units, c0 } = twoUnits();
    expect(code(() => applyComplete(units, c0, { parts: 2, samples: 16, bytes: 200 }, T0))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  test('a decision that did not read every unit is refused', () => {
    const { units, c0 } = twoUnits();
    expect(code(() => applyComplete(new Map([[0, units.get(0)!]]), c0, undefined, T0))).toBe(
      'INTERNAL',
    );
  });

  test('status shows the shard as its units sum up, the units under it', () => {
    const { units, c1 } = twoUnits();
    const done = applyComplete(units, c1, undefined, T0 + 1)!;
    const all = new Map([...units, ...done.writes]);
    const dataset = {
      dataset_id: DS,
      dataset_uri: '/d',
      num_shards: 1,
      total_tasks: 100,
      max_attempts: 3,
      fingerprint: 'f',
      registered_at: new Date(T0).toISOString(),
    };
    const status = buildStatus(
      dataset,
      [...all].map(([unit, state]) => ({ shard_id: 0, unit, state })),
      T0 + 2,
    );
    const row = status.shards[0]!;
    expect(row).toMatchObject({
      status: 'in_use',
      assigned_to: 'w1',
      unit_count: 2,
      units_completed: 1,
      parts_committed: 2,
      samples_committed: 16,
      tasks_done: 100,
    });
    expect(
      row.units.map((u) => [u.unit, u.status, u.assigned_to, u.unit_start, u.unit_end]),
    ).toEqual([
      [0, 'in_use', 'w1', 100, 150],
      [1, 'completed', 'w2', 150, 200],
    ]);
    expect(status.totals).toMatchObject({ shards: 1, in_use: 1, tasks_done: 100 });
  });

  test('a reset keeps the split; discarding parts sends each unit back to its own start', () => {
    const { units } = twoUnits();
    const kept = applyReset(units, 'op', T0 + 1, false);
    expect(kept.get(1)).toMatchObject({
      status: 'available',
      next_task_index: 200,
      parts_committed: 1,
    });
    const gone = applyReset(units, 'op', T0 + 1, true);
    expect(
      [...gone].map(([u, s]) => [
        u,
        s.status,
        s.next_task_index,
        s.parts_committed,
        s.run_fingerprint,
      ]),
    ).toEqual([
      [0, 'available', 100, 0, null],
      [1, 'available', 150, 0, null],
    ]);
    expect(gone.get(0)!.units_completed).toBe(0);
  });
});
