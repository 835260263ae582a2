/**
 * Half precision in plain JS: the decoder every fp16 comparison in these tests relies on, and
 * the encoder for the fp32 → fp16 path. Checked exhaustively over all 65536 bit patterns.
 */
import {
  f16ArrayToF32,
  f16BitsToNumber,
  f32ArrayToF16,
  f32ToF16Bits,
} from '../../../worker/extraction/fp16';

describe('fp16', () => {
  test('known values decode and encode exactly', () => {
    const cases: Array<[number, number]> = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x7bff, 65504],
      [0x0001, 2 ** -24],
      [0x0400, 2 ** -14],
      [0x3555, 0.333251953125],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ];
    for (const [bits, value] of cases) {
      expect(f16BitsToNumber(bits)).toBe(value);
      expect(f32ToF16Bits(value)).toBe(bits);
    }
    expect(f16BitsToNumber(0x8000)).toBe(-0);
    expect(Number.isNaN(f16BitsToNumber(0x7e00))).toBe(true);
    expect(f32ToF16Bits(NaN) & 0x7c00).toBe(0x7c00);
  });

  test('every fp16 value survives decode then encode', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = f16BitsToNumber(bits);
      if (!Number.isNaN(v) && f32ToF16Bits(v) !== bits) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });

  test('rounds to nearest, ties to even, overflows to infinity, underflows to zero', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, rounds up to even
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -26)).toBe(0);
    expect(f32ToF16Bits(3 * 2 ** -26)).toBe(0x0001);
  });

  test('array helpers agree with the scalar ones', () => {
    const src = Float32Array.from([0.1, -3.5, 1000, 1e-6]);
    const bits = f32ArrayToF16(src);
    expect(Array.from(bits)).toEqual(Array.from(src, (v) => f32ToF16Bits(v)));
    expect(Array.from(f16ArrayToF32(bits))).toEqual(
      Array.from(bits, (b) => Math.fround(f16BitsToNumber(b))),
    );
  });
});
