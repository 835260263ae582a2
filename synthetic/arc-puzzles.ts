/**
 * Sample ARC-style puzzles for the demo, generated here (no download): each task is a small
 * grid transformation (mirror, rotate, recolour, gravity, scale, outline) shown by three
 * train pairs, with one test input. Deterministic for a seed.
 */
import { seededRandom } from '../core/random';

/** A grid of colours 0-9. */
export type Grid = number[][];

/** An ARC task as shardline reads it. */
export interface ArcTask {
  task_id: string;
  train: Array<{ input: Grid; output: Grid }>;
  test: Array<{ input: Grid }>;
}

type Rule = { name: string; apply: (g: Grid) => Grid };

const mirror: Rule = { name: 'mirror', apply: (g) => g.map((row) => [...row].reverse()) };
const flip: Rule = { name: 'flip', apply: (g) => [...g].reverse().map((r) => [...r]) };
const rotate: Rule = {
  name: 'rotate',
  apply: (g) => g[0]!.map((_, c) => g.map((row) => row[c]!).reverse()),
};
const gravity: Rule = {
  name: 'gravity',
  apply: (g) => {
    const h = g.length;
    const out = g.map((r) => r.map(() => 0));
    for (let c = 0; c < g[0]!.length; c++) {
      const cells = g.map((r) => r[c]!).filter((v) => v !== 0);
      cells.forEach((v, i) => (out[h - cells.length + i]![c] = v));
    }
    return out;
  },
};
const scale: Rule = {
  name: 'scale',
  apply: (g) => g.flatMap((row) => [row.flatMap((v) => [v, v]), row.flatMap((v) => [v, v])]),
};
const outline: Rule = {
  name: 'outline',
  apply: (g) =>
    g.map((row, r) =>
      row.map((v, c) =>
        v === 0 &&
        [
          [-1, 0],
          [1, 0],
          [0, -1],
          [0, 1],
        ].some(([dr, dc]) => (g[r + dr!]?.[c + dc!] ?? 0) !== 0)
          ? 8
          : v,
      ),
    ),
};
function recolour(from: number, to: number): Rule {
  return {
    name: `recolour-${from}-${to}`,
    apply: (g) => g.map((row) => row.map((v) => (v === from ? to : v))),
  };
}

function randomGrid(r: () => number, maxSide: number, density: number, colours: number[]): Grid {
  const h = 2 + Math.floor(r() * (maxSide - 1));
  const w = 2 + Math.floor(r() * (maxSide - 1));
  return Array.from({ length: h }, () =>
    Array.from({ length: w }, () =>
      r() < density ? colours[Math.floor(r() * colours.length)]! : 0,
    ),
  );
}

/** `count` puzzles from `seed`; grids up to `maxSide` cells a side. */
export function generateArcTasks(count: number, seed: number, maxSide = 8): ArcTask[] {
  const r = seededRandom(seed);
  const tasks: ArcTask[] = [];
  for (let i = 0; i < count; i++) {
    const colours = Array.from({ length: 1 + Math.floor(r() * 3) }, () => 1 + Math.floor(r() * 9));
    const rules: Rule[] = [
      mirror,
      flip,
      rotate,
      gravity,
      scale,
      outline,
      recolour(colours[0]!, 1 + ((colours[0]! + 3) % 9)),
    ];
    const rule = rules[Math.floor(r() * rules.length)]!;
    const side = rule === scale ? Math.min(maxSide, 5) : maxSide;
    const pairs = Array.from({ length: 3 }, () => {
      const input = randomGrid(r, side, 0.35, colours);
      return { input, output: rule.apply(input) };
    });
    tasks.push({
      task_id: `demo_${i.toString(16).padStart(6, '0')}_${rule.name}`,
      train: pairs,
      test: [{ input: randomGrid(r, side, 0.35, colours) }],
    });
  }
  return tasks;
}
