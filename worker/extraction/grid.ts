/**
 * ARC grids: the text encoding used in prompts and the geometric and colour transforms used
 * for augmentation (docs/notes/original-system.md §4.3, §6.7).
 *
 * A grid is a non-empty rectangle of colours 0-9, `grid[row][col]`. Functions here assume a
 * validated grid (`task.ts` validates) and never mutate their input.
 */

/** A validated ARC grid: `grid[row][col]`, every row the same non-zero length, colours 0-9. */
export type Grid = ReadonlyArray<ReadonlyArray<number>>;

/**
 * The grid encoding, named as the original named it, recorded in every part's metadata:
 * a fenced `grid` block with a `shape: ROWSxCOLS` header and numbered rows of digits.
 */
export const GRID_ENCODING = 'GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder()))';

/**
 * Encodes a grid as the original's `GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder()))`:
 * `[[1,1,0],[0,0,1]]` becomes "```grid shape: 2x3\n1 110\n2 001\n```".
 */
export function encodeGrid(grid: Grid): string {
  const rows = grid.map((row, i) => `${i + 1} ${row.join('')}`);
  return `\`\`\`grid shape: ${grid.length}x${grid[0]?.length ?? 0}\n${rows.join('\n')}\n\`\`\``;
}

/** Mirrors left-right (numpy `np.flip(grid, axis=1)`). */
export function flipHorizontal(grid: Grid): number[][] {
  return grid.map((row) => [...row].reverse());
}

/**
 * Rotates by 90 degrees counter-clockwise `k` times (numpy `np.rot90(grid, k)`):
 * `[[1,2],[3,4]]` becomes `[[2,4],[1,3]]`. A ROWSxCOLS grid becomes COLSxROWS for odd `k`.
 */
export function rot90(grid: Grid, k: number): number[][] {
  let out = grid.map((row) => [...row]);
  for (let turn = 0; turn < ((k % 4) + 4) % 4; turn++) {
    const rows = out.length;
    const cols = out[0]?.length ?? 0;
    const next: number[][] = [];
    for (let r = 0; r < cols; r++) {
      const line: number[] = [];
      for (let c = 0; c < rows; c++) line.push(out[c]![cols - 1 - r]!);
      next.push(line);
    }
    out = next;
  }
  return out;
}

/** Replaces every colour `c` by `colorMap[c]`; `colorMap` is a permutation of 0-9. */
export function mapColors(grid: Grid, colorMap: ReadonlyArray<number>): number[][] {
  return grid.map((row) => row.map((c) => colorMap[c]!));
}

/** One geometric + colour transform, applied as the original did: flip, then rotate, then colours. */
export interface GridTransform {
  /** Mirror left-right first. */
  hflip: boolean;
  /** Then rotate counter-clockwise this many quarter turns (0-3). */
  rot90: number;
  /** Then map colour `c` to `colorMap[c]` (a permutation of 0-9). */
  colorMap: ReadonlyArray<number>;
}

/** Applies a `GridTransform` to a grid. */
export function transformGrid(grid: Grid, t: GridTransform): number[][] {
  return mapColors(rot90(t.hflip ? flipHorizontal(grid) : grid, t.rot90), t.colorMap);
}
