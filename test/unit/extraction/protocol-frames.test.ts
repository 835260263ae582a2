/**
 * The extractor protocol's framing on the worker's side (docs/extractor-protocol.md §2):
 * frames written by `encodeFrame` read back by `FrameReader` whatever the chunking, the
 * document's worked example byte for byte, and every kind of broken stream refused.
 */
import { FrameReader, encodeFrame } from '../../../worker/extraction/protocol-extractor';

/** A frame's bytes from a header and a payload, without `encodeFrame` (for broken ones). */
function rawFrame(header: unknown, payload = Buffer.alloc(0), magic = 'SLXF'): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(16);
  head.write(magic, 0, 'latin1');
  head.writeUInt32LE(json.length, 4);
  head.writeBigUInt64LE(BigInt(payload.length), 8);
  return Buffer.concat([head, json, payload]);
}

describe('frames', () => {
  const tokens = Int32Array.from([101, 102, 103, 104]);
  const lengths = Int32Array.from([3, 1]);

  test('the worked example of §2: an extract of [101, 102, 103] and [104] is 218 bytes', () => {
    const bytes = Buffer.concat(
      encodeFrame({ type: 'extract', id: 7 }, [
        { name: 'token_ids', dtype: 'int32', shape: [4], data: tokens },
        { name: 'lengths', dtype: 'int32', shape: [2], data: lengths },
      ]),
    );
    expect(bytes.length).toBe(218);
    expect(bytes.subarray(0, 16).toString('hex')).toBe('534c5846b20000001800000000000000');
    expect(bytes.subarray(16, 16 + 178).toString('utf8')).toBe(
      '{"type":"extract","id":7,"arrays":[{"name":"token_ids","dtype":"int32","shape":[4],"offset":0,"nbytes":16},{"name":"lengths","dtype":"int32","shape":[2],"offset":16,"nbytes":8}]}',
    );
    expect(bytes.subarray(194).toString('hex')).toBe(
      '65000000660000006700000068000000' + '0300000001000000',
    );
  });

  test('arrays of every dtype come back equal, at 8-byte offsets, however the bytes are cut', () => {
    const half = Uint16Array.from([0x3c00, 0xc000, 0x7bff]); // 1, -2, 65504 in float16
    const single = Float32Array.from([0.5, -1.25, 3e38, 1e-30, 7]);
    const frames = [
      encodeFrame({ type: 'result', id: 1, extra: { nested: true } }, [
        { name: 'row_counts', dtype: 'int32', shape: [1], data: Int32Array.from([3]) },
        { name: 'resid_post.0', dtype: 'float16', shape: [3, 1], data: half },
        { name: 'resid_post.1', dtype: 'float32', shape: [5], data: single },
      ]),
      encodeFrame({ type: 'bye' }),
    ];
    const bytes = Buffer.concat(frames.flat());
    for (const cut of [1, 7, 16, 17, 64, bytes.length]) {
      const reader = new FrameReader();
      const got = [];
      for (let at = 0; at < bytes.length; at += cut)
        got.push(...reader.push(bytes.subarray(at, at + cut)));
      expect(reader.idle).toBe(true);
      expect(got.map((f) => f.header.type)).toEqual(['result', 'bye']);
      const f = got[0]!;
      expect(f.header.extra).toEqual({ nested: true });
      const offsets = [...f.arrays.values()].map((a) => a.offset);
      expect(offsets.every((o) => o % 8 === 0)).toBe(true);
      const a = f.arrays.get('resid_post.0')!;
      expect(Array.from(new Uint16Array(f.payload, a.offset, 3))).toEqual(Array.from(half));
      const b = f.arrays.get('resid_post.1')!;
      expect(Array.from(new Float32Array(f.payload, b.offset, 5))).toEqual(Array.from(single));
      expect(got[1]!.arrays.size).toBe(0);
    }
  });

  test('a reader holding half a frame is not idle (the stream ending there is broken)', () => {
    const bytes = Buffer.concat(encodeFrame({ type: 'bye' }));
    const reader = new FrameReader();
    expect(reader.push(bytes.subarray(0, 10))).toEqual([]);
    expect(reader.idle).toBe(false);
  });

  const entry = { name: 'x', dtype: 'int32', shape: [2], offset: 0, nbytes: 8 };
  const broken: Array<[string, Buffer, RegExp]> = [
    ['another magic', rawFrame({ type: 'bye' }, undefined, 'JUNK'), /starts with "JUNK", not SLXF/],
    ['a stray print', Buffer.from('Traceback (most recent call last):\n'), /not SLXF/],
    [
      'a header that is not JSON',
      Buffer.concat([
        Buffer.from('SLXF'),
        Buffer.from([3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Buffer.from('{x]'),
      ]),
      /not JSON/,
    ],
    ['a header without a type', rawFrame({ id: 1 }), /without a type/],
    ['a header that is a list', rawFrame([1, 2]), /without a type/],
    ['arrays that are not a list', rawFrame({ type: 'result', arrays: {} }), /not a list/],
    [
      'an unknown dtype',
      rawFrame({ type: 'result', arrays: [{ ...entry, dtype: 'int64' }] }, Buffer.alloc(8)),
      /malformed/,
    ],
    [
      'nbytes that do not match the shape',
      rawFrame({ type: 'result', arrays: [{ ...entry, nbytes: 12 }] }, Buffer.alloc(16)),
      /malformed/,
    ],
    [
      'a negative dimension',
      rawFrame({ type: 'result', arrays: [{ ...entry, shape: [-2], nbytes: -8 }] }),
      /malformed/,
    ],
    [
      'an offset off the 8-byte grid',
      rawFrame({ type: 'result', arrays: [{ ...entry, offset: 4 }] }, Buffer.alloc(16)),
      /outside the payload/,
    ],
    [
      'an array past the payload',
      rawFrame({ type: 'result', arrays: [{ ...entry, offset: 8 }] }, Buffer.alloc(8)),
      /outside the payload/,
    ],
    [
      'a name twice',
      rawFrame({ type: 'result', arrays: [entry, { ...entry, offset: 8 }] }, Buffer.alloc(16)),
      /appears twice/,
    ],
  ];
  test.each(broken)('refuses %s', (_what, bytes, reason) => {
    expect(() => new FrameReader().push(bytes)).toThrow(reason);
  });

  test('refuses a header longer than 16 MiB before reading it', () => {
    const head = Buffer.alloc(16);
    head.write('SLXF', 0, 'latin1');
    head.writeUInt32LE((16 << 20) + 1, 4);
    expect(() => new FrameReader().push(head)).toThrow(/a header of 16777217 bytes/);
  });
});
