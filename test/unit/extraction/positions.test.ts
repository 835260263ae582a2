/** `--positions`: parsing, the rows each form stores, and refusals that name the flag. */
import {
  formatPositions,
  parsePositions,
  selectPositions,
  storedRows,
} from '../../../worker/extraction/positions';

test('all, last, answer and lists choose the documented rows', () => {
  const arc = { length: 10, answerStart: 7 };
  const text = { length: 10, answerStart: null };
  expect(selectPositions(parsePositions('all'), arc)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  expect(selectPositions(parsePositions('last'), arc)).toEqual([9]);
  expect(selectPositions(parsePositions('answer'), arc)).toEqual([7]);
  expect(selectPositions(parsePositions('answer'), text)).toEqual([9]);
  // From the start and from the end, overlapping, past the end: ascending, each once, in range.
  const list = parsePositions(' 0, 2-4 ,-2--1,3,8-20,-30 ');
  expect(selectPositions(list, arc)).toEqual([0, 2, 3, 4, 8, 9]);
  expect(selectPositions(list, { length: 3, answerStart: null })).toEqual([0, 1, 2]);
  expect(storedRows(list, 10)).toBe(6);
  expect(storedRows(parsePositions('all'), 10)).toBe(10);
  expect(storedRows(parsePositions('last'), 0)).toBe(0);
  expect(formatPositions(parsePositions('0,16-31,-1'))).toBe('0,16-31,-1');
});

test('bad values are refused with the flag named', () => {
  for (const bad of ['', 'first', '3-1', '1-x', '-3-2', '5,,6'])
    expect(() => parsePositions(bad)).toThrow(/--positions/);
});
