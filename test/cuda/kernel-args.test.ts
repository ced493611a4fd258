/**
 * KernelArgs packs a kernel's one argument struct as C lays it out. It packs into one shared
 * scratch buffer (a decode step packs ~300 of them), so the tests check that nothing of an
 * earlier struct leaks into a later one's gaps or padding, and that interleaving two is refused.
 */
import { describe, expect, test } from "bun:test";
import { KernelArgs } from "../../src/backends/cuda/runtime";

const buf = (ptr: number) => ({ ptr, byteLength: 1 << 20, label: "b" });

describe("KernelArgs", () => {
  test("C layout: natural alignment, zeroed gaps, size padded to 8; pointers above 4 GiB exact", () => {
    // Dirty the scratch first: a struct of all-ones bytes.
    new KernelArgs().i32(-1).i32(-1).i32(-1).i32(-1).i32(-1).i32(-1).bytes();
    const b = new KernelArgs().i32(7).ptr(buf(0x7f12_3456_789a)).f32(1.5).bytes();
    expect(b.byteLength).toBe(24); // i32 at 0, gap 4..8, u64 at 8, f32 at 16, padding 20..24
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    expect(v.getInt32(0, true)).toBe(7);
    expect(v.getUint32(4, true)).toBe(0); // the alignment gap
    expect(v.getBigUint64(8, true)).toBe(0x7f12_3456_789an);
    expect(v.getFloat32(16, true)).toBe(1.5);
    expect(v.getUint32(20, true)).toBe(0); // the padding
    expect(new KernelArgs().ptr(null).bytes()).toEqual(new Uint8Array(8));
    expect(new KernelArgs().bytes()).toEqual(new Uint8Array(8));
  });

  test("bytes() is a copy: packing the next struct does not change it", () => {
    const a = new KernelArgs().i32(1).i32(2).bytes();
    new KernelArgs().i32(3).i32(4).bytes();
    expect([...a]).toEqual([1, 0, 0, 0, 2, 0, 0, 0]);
  });

  test("a second KernelArgs started before the first's bytes() makes the first throw", () => {
    const first = new KernelArgs().i32(1);
    new KernelArgs().i32(2).bytes();
    expect(() => first.i32(3)).toThrow(/another KernelArgs was started/);
    expect(() => first.bytes()).toThrow(/another KernelArgs was started/);
  });

  test("bad values and overflow are refused", () => {
    expect(() => new KernelArgs().u64(-1)).toThrow(/non-negative safe integer/);
    expect(() => new KernelArgs().u64(2 ** 53)).toThrow(/non-negative safe integer/);
    const k = new KernelArgs();
    for (let i = 0; i < 32; i++) k.u64(i);
    expect(() => k.u64(32)).toThrow(/more than 256 bytes/);
  });
});
