/**
 * Grid encoding and transforms, pinned to the original system's behaviour
 * (docs/notes/original-system.md §4.3: arc24's encoder, numpy flip and rot90).
 */
import {
  GRID_ENCODING,
  encodeGrid,
  flipHorizontal,
  rot90,
  transformGrid,
} from '../../../worker/extraction/grid';
import { gridProblem } from '../../../worker/extraction/task';

describe('grid encoding', () => {
  test('is the original GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder()))', () => {
    expect(GRID_ENCODING).toBe('GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder()))');
    expect(
      encodeGrid([
        [1, 1, 0],
        [0, 0, 1],
      ]),
    ).toBe('```grid shape: 2x3\n1 110\n2 001\n```');
    expect(encodeGrid([[7]])).toBe('```grid shape: 1x1\n1 7\n```');
  });

  test('numbers rows from 1 past 9 without padding', () => {
    const tall = Array.from({ length: 11 }, (_, r) => [r % 10]);
    const lines = encodeGrid(tall).split('\n');
    expect(lines[0]).toBe('```grid shape: 11x1');
    expect(lines[10]).toBe('10 9');
    expect(lines[11]).toBe('11 0');
  });
});

describe('grid transforms (numpy semantics)', () => {
  const g = [
    [1, 2, 3],
    [4, 5, 6],
  ];

  test('flipHorizontal is np.flip(axis=1)', () => {
    expect(flipHorizontal(g)).toEqual([
      [3, 2, 1],
      [6, 5, 4],
    ]);
  });

  test('rot90 is np.rot90 (counter-clockwise), k taken mod 4', () => {
    expect(
      rot90(
        [
          [1, 2],
          [3, 4],
        ],
        1,
      ),
    ).toEqual([
      [2, 4],
      [1, 3],
    ]);
    expect(rot90(g, 1)).toEqual([
      [3, 6],
      [2, 5],
      [1, 4],
    ]);
    expect(rot90(g, 2)).toEqual([
      [6, 5, 4],
      [3, 2, 1],
    ]);
    expect(rot90(g, 3)).toEqual([
      [4, 1],
      [5, 2],
      [6, 3],
    ]);
    expect(rot90(g, 4)).toEqual(g);
    expect(rot90(g, -1)).toEqual(rot90(g, 3));
  });

  test('transformGrid flips, then rotates, then recolours, without touching its input', () => {
    const before = JSON.stringify(g);
    const map = [0, 9, 8, 7, 6, 5, 4, 3, 2, 1];
    // flip: [[3,2,1],[6,5,4]]; rot90: [[1,4],[2,5],[3,6]]; colours c -> map[c].
    expect(transformGrid(g, { hflip: true, rot90: 1, colorMap: map })).toEqual([
      [9, 6],
      [8, 5],
      [7, 4],
    ]);
    expect(JSON.stringify(g)).toBe(before);
  });
});

describe('grid validation', () => {
  test.each([
    [[[1, 2], [3]], 'ragged'],
    [[[1, 10]], '10'],
    [[[1, -1]], '-1'],
    [[[1.5]], '1.5'],
    [[['1']], '"1"'],
    [[], 'no rows'],
    [[[]], 'row 0 is empty'],
    ['grid', 'not an array'],
    [[1, 2], 'row 0 is not an array'],
  ])('%j is rejected (%s)', (grid, words) => {
    expect(gridProblem(grid)).toContain(words);
  });

  test('a rectangle of 0-9 is accepted', () => {
    expect(
      gridProblem([
        [0, 9],
        [5, 5],
      ]),
    ).toBeNull();
  });
});
