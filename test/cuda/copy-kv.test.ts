/**
 * The two small kernels the backend adds for itself: kiln_copy_f32 (a sequence's last row
 * gathered before the output head) and kiln_store_kv_f16_at (a decode step's K/V rows stored at a
 * position read from device memory, so a graph replays the same launch every token). Each against
 * its host reference, with guard bytes, on every runtime.
 */
import { expect, test } from "bun:test";
import { copyF32 } from "../../src/backends/cuda/kernels/copy";
import { storeKvF16At } from "../../src/backends/cuda/kernels/kv";
import { KilnError } from "../../src/errors";
import { randn } from "../helpers";
import { f32Bytes, forEachRuntime, guarded } from "./runtimes";

await forEachRuntime(import.meta.file, (rt) => {
  test("copy: n = 1, 255, 257, 1000 floats equal the source; the guard after dst is intact; overlap refused", () => {
    for (const n of [1, 255, 257, 1000]) {
      const src = randn(n, n);
      const s = guarded(rt, n * 4, "src", f32Bytes(src));
      const d = guarded(rt, n * 4, "dst");
      copyF32(rt, s.buf, d.buf, n);
      expect(d.readF32()).toEqual(src);
      d.checkGuard();
      rt.free(s.whole);
      rt.free(d.whole);
    }
    const b = rt.alloc(64, "row");
    expect(() => copyF32(rt, { ...b, byteLength: 32 }, { ptr: b.ptr + 16, byteLength: 32, label: "row+16" }, 8)).toThrow(KilnError);
    expect(() => copyF32(rt, b, b, 17)).toThrow(/src/);
    rt.free(b);
  });

  test("store at a device position: rows pos..pos+n-1 get f16(src) (nearest even), every other row is untouched", () => {
    const [capacity, rowElems] = [9, 24];
    for (const [pos, nRows] of [[0, 1], [4, 2], [8, 1]] as const) {
      const src = randn(nRows * rowElems, pos * 7 + nRows, 3);
      const before = new Uint16Array(capacity * rowElems).fill(0x7bff); // 65504, not a value src rounds to
      const cache = guarded(rt, capacity * rowElems * 2, "cache", new Uint8Array(before.buffer));
      const s = guarded(rt, src.byteLength, "src", f32Bytes(src));
      const p = guarded(rt, 4, "pos", new Uint8Array(Int32Array.of(pos).buffer));
      storeKvF16At(rt, s.buf, cache.buf, p.buf, rowElems, nRows, capacity);
      const got = new Uint16Array(cache.read().buffer);
      const want = before.slice();
      want.set(new Uint16Array(new Float16Array(src).buffer), pos * rowElems);
      expect(got).toEqual(want);
      cache.checkGuard();
      for (const g of [cache, s, p]) rt.free(g.whole);
    }
  });

  test("store: a position past the cache writes nothing (the kernel's guard), a short cache is refused before launch", () => {
    const [capacity, rowElems] = [4, 8];
    const cache = guarded(rt, capacity * rowElems * 2, "cache", new Uint8Array(capacity * rowElems * 2));
    const s = guarded(rt, rowElems * 4, "src", f32Bytes(randn(rowElems, 3)));
    const p = guarded(rt, 4, "pos", new Uint8Array(Int32Array.of(capacity).buffer));
    storeKvF16At(rt, s.buf, cache.buf, p.buf, rowElems, 1, capacity);
    expect(cache.read().every((b) => b === 0)).toBe(true);
    cache.checkGuard();
    expect(() => storeKvF16At(rt, s.buf, { ...cache.buf, byteLength: 10 }, p.buf, rowElems, 1, capacity)).toThrow(/cache/);
    for (const g of [cache, s, p]) rt.free(g.whole);
  });
});
