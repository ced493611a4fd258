/**
 * The host emulator itself (cuda/emu/emu.cpp through EmulatorRuntime), with the test-only
 * kernels of cuda/emu/selftest.cu: barriers, shuffles, thread ids, shared memory, MMA fragment
 * layouts, and the errors a broken kernel or launch must produce.
 */
import { describe, expect, test } from "bun:test";
import { EmulatorRuntime, emulatorKernels } from "../../src/backends/cuda/emulator";
import { KernelArgs, type DeviceBuffer } from "../../src/backends/cuda/runtime";
import { KilnError } from "../../src/errors";
import { f32Bytes } from "./runtimes";

const rt = new EmulatorRuntime();

function thrown(f: () => unknown): KilnError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error("expected a KilnError, nothing was thrown");
}

function upF32(a: Float32Array, label: string): DeviceBuffer {
  const b = rt.alloc(a.byteLength, label);
  rt.upload(b, f32Bytes(a));
  return b;
}
function downF32(b: DeviceBuffer, n = b.byteLength / 4): Float32Array {
  const out = new Float32Array(n);
  rt.download(b, new Uint8Array(out.buffer));
  return out;
}

/** A deterministic generator (tests must not flake). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function f16Bits(x: number): number {
  const f = new Float16Array([x]);
  return new Uint16Array(f.buffer)[0]!;
}
function f16Value(bits: number): number {
  return new Float16Array(new Uint16Array([bits]).buffer)[0]!;
}

describe("emulator", () => {
  test("registers the self-test kernels with their argument sizes", () => {
    const k = new Map(emulatorKernels().map((e) => [e.name, e.argBytes]));
    expect(k.get("kiln_emutest_block_sum")).toBe(24);
    expect(k.get("kiln_emutest_mma")).toBe(40);
    expect(k.get("kiln_emutest_divergent_sync")).toBe(8);
  });

  test("block reduction with shuffles and kiln_sync gives each row's sum (odd sizes, partial warps of data)", () => {
    const r = rng(1);
    for (const [rows, n, threads] of [
      [1, 1, 32],
      [3, 7, 64],
      [5, 1000, 256],
      [2, 33, 1024],
      [4, 257, 96],
    ] as const) {
      const x = new Float32Array(rows * n).map(() => r() * 2 - 1);
      const xb = upF32(x, "x");
      const out = rt.alloc(rows * 4, "out");
      rt.launch("kiln_emutest_block_sum", [rows, 1, 1], [threads, 1, 1], 0, new KernelArgs().ptr(xb).ptr(out).i32(n).bytes());
      const got = downF32(out);
      for (let row = 0; row < rows; row++) {
        let want = 0;
        for (let i = 0; i < n; i++) want += x[row * n + i]!;
        expect(Math.abs(got[row]! - want)).toBeLessThan(1e-4 * Math.max(1, Math.abs(want)) + 1e-5);
      }
      rt.free(xb);
      rt.free(out);
    }
  });

  test("a barrier only part of the block reaches is a deadlock, and the runtime recovers", () => {
    const out = rt.alloc(64 * 4, "out");
    const e = thrown(() => rt.launch("kiln_emutest_divergent_sync", [2, 1, 1], [64, 1, 1], 0, new KernelArgs().ptr(out).bytes()));
    expect(e.code).toBe("CUDA_EMULATOR");
    expect(e.message).toContain("kiln_emutest_divergent_sync");
    expect(e.message).toContain("deadlock: 16 threads wait at a barrier, 48 finished");
    // The next launch works (the abandoned fibers are rebuilt).
    const x = upF32(new Float32Array([1, 2, 3]), "x");
    rt.launch("kiln_emutest_block_sum", [1, 1, 1], [64, 1, 1], 0, new KernelArgs().ptr(x).ptr(out).i32(3).bytes());
    expect(downF32(out, 1)[0]).toBe(6);
    // With all threads below 16 there is no divergence: the same kernel completes.
    rt.launch("kiln_emutest_divergent_sync", [1, 1, 1], [16, 1, 1], 0, new KernelArgs().ptr(out).bytes());
    rt.free(out);
    rt.free(x);
  });

  test("a shuffle after a lane returned deadlocks; a partial warp cannot shuffle across missing lanes", () => {
    const out = rt.alloc(64 * 4, "out");
    const e = thrown(() => rt.launch("kiln_emutest_exited_lane", [1, 1, 1], [32, 1, 1], 0, new KernelArgs().ptr(out).bytes()));
    expect(e.message).toContain("deadlock: 31 threads wait at a barrier, 1 finished");
    expect(e.message).toContain("31 at a warp collective, whose warps have lanes that returned");
    const x = upF32(new Float32Array(48).fill(1), "x");
    const e2 = thrown(() => rt.launch("kiln_emutest_block_sum", [1, 1, 1], [48, 1, 1], 0, new KernelArgs().ptr(x).ptr(out).i32(48).bytes()));
    expect(e2.message).toContain("does not exist");
    rt.free(out);
    rt.free(x);
  });

  test("thread and block ids follow CUDA's order (x fastest) in 3-D grids and blocks; lane^1 shuffles", () => {
    const grid = [3, 2, 2] as const;
    const block = [8, 4, 2] as const;
    const nt = block[0] * block[1] * block[2];
    const total = grid[0] * grid[1] * grid[2] * nt;
    const out = rt.alloc(total * 7 * 4, "ids");
    rt.launch("kiln_emutest_ids", grid, block, 0, new KernelArgs().ptr(out).bytes());
    const bytes = new Uint8Array(total * 7 * 4);
    rt.download(out, bytes);
    const u = new Uint32Array(bytes.buffer);
    let i = 0;
    for (let bz = 0; bz < grid[2]; bz++)
      for (let by = 0; by < grid[1]; by++)
        for (let bx = 0; bx < grid[0]; bx++)
          for (let tz = 0; tz < block[2]; tz++)
            for (let ty = 0; ty < block[1]; ty++)
              for (let tx = 0; tx < block[0]; tx++) {
                const lin = tx + ty * block[0] + tz * block[0] * block[1];
                expect([...u.subarray(i * 7, i * 7 + 7)]).toEqual([tx, ty, tz, bx, by, bz, lin ^ 1]);
                i++;
              }
    rt.free(out);
  });

  test("dynamic shared memory is shared within a block and poisoned between blocks", () => {
    const bs = 40;
    const blocks = 3;
    const x = new Float32Array(bs * blocks).map((_, i) => i + 1);
    const xb = upF32(x, "x");
    const out = rt.alloc(x.byteLength, "out");
    rt.launch("kiln_emutest_smem", [blocks, 1, 1], [bs, 1, 1], bs * 4, new KernelArgs().ptr(xb).ptr(out).i32(0).bytes());
    const got = downF32(out);
    for (let b = 0; b < blocks; b++) for (let t = 0; t < bs; t++) expect(got[b * bs + t]).toBe(x[b * bs + ((t + 1) % bs)]!);
    // Blocks after the first skip the writes: they must read the poison, not block 0's values.
    rt.launch("kiln_emutest_smem", [blocks, 1, 1], [bs, 1, 1], bs * 4, new KernelArgs().ptr(xb).ptr(out).i32(1).bytes());
    const got2 = downF32(out);
    for (let t = 0; t < bs; t++) expect(got2[t]).toBe(x[(t + 1) % bs]!);
    for (let i = bs; i < bs * blocks; i++) expect(Number.isNaN(got2[i]!)).toBe(true);
    rt.free(xb);
    rt.free(out);
  });

  function mma(A: Uint16Array, B: Uint16Array, C: Float32Array, swap: boolean): Float32Array {
    const ab = rt.alloc(A.byteLength, "A");
    rt.upload(ab, new Uint8Array(A.buffer));
    const bb = rt.alloc(B.byteLength, "B");
    rt.upload(bb, new Uint8Array(B.buffer));
    const cb = upF32(C, "C");
    const db = rt.alloc(16 * 8 * 4, "D");
    rt.launch("kiln_emutest_mma", [1, 1, 1], [32, 1, 1], 0, new KernelArgs().ptr(ab).ptr(bb).ptr(cb).ptr(db).i32(swap ? 1 : 0).bytes());
    const d = downF32(db);
    for (const b of [ab, bb, cb, db]) rt.free(b);
    return d;
  }

  test("mma_16816 on random f16 matrices equals an f32 matmul of the same values; a wrong fragment layout does not", () => {
    const r = rng(7);
    for (let trial = 0; trial < 3; trial++) {
      const A = new Uint16Array(256).map(() => f16Bits(r() * 4 - 2));
      const B = new Uint16Array(128).map(() => f16Bits(r() * 4 - 2));
      const C = new Float32Array(128).map(() => r() - 0.5);
      const want = new Float32Array(128);
      for (let i = 0; i < 16; i++)
        for (let j = 0; j < 8; j++) {
          let s = C[i * 8 + j]!;
          for (let k = 0; k < 16; k++) s += f16Value(A[i * 16 + k]!) * f16Value(B[k * 8 + j]!);
          want[i * 8 + j] = s;
        }
      const got = mma(A, B, C, false);
      let maxErr = 0;
      for (let i = 0; i < 128; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - want[i]!));
      expect(maxErr).toBeLessThan(1e-4);
      const wrong = mma(A, B, C, true);
      let wrongErr = 0;
      for (let i = 0; i < 128; i++) wrongErr = Math.max(wrongErr, Math.abs(wrong[i]! - want[i]!));
      expect(wrongErr).toBeGreaterThan(0.1);
    }
  });

  test("refuses a wrong argument size, an unknown kernel, bad grids and blocks, out-of-range copies", () => {
    const out = rt.alloc(64, "out");
    const e = thrown(() => rt.launch("kiln_emutest_divergent_sync", [1, 1, 1], [32, 1, 1], 0, new KernelArgs().ptr(out).i32(1).bytes()));
    expect(e.message).toBe("kernel kiln_emutest_divergent_sync takes 8 argument bytes, got 16");
    expect(thrown(() => rt.launch("kiln_nope", [1, 1, 1], [1, 1, 1], 0, new Uint8Array(8))).message).toContain("unknown kernel kiln_nope");
    const args = new KernelArgs().ptr(out).bytes();
    expect(thrown(() => rt.launch("kiln_emutest_divergent_sync", [1, 1, 1], [1025, 1, 1], 0, args)).message).toContain("block");
    expect(thrown(() => rt.launch("kiln_emutest_divergent_sync", [1, 1, 1], [64, 32, 1], 0, args)).message).toContain("2048 threads");
    expect(thrown(() => rt.launch("kiln_emutest_divergent_sync", [0, 1, 1], [32, 1, 1], 0, args)).message).toContain("grid");
    expect(thrown(() => rt.launch("kiln_emutest_divergent_sync", [1.5, 1, 1], [32, 1, 1], 0, args)).message).toContain("grid");
    expect(thrown(() => rt.upload(out, new Uint8Array(65))).message).toContain("outside its 64 bytes");
    expect(thrown(() => rt.download(out, new Uint8Array(8), 60)).message).toContain("outside its 64 bytes");
    rt.free(out);
    expect(thrown(() => rt.upload(out, new Uint8Array(4))).message).toContain("not a live allocation");
    expect(thrown(() => rt.free(out)).message).toContain("not a live allocation");
  });

  test("allocations are zeroed and 256-byte aligned", () => {
    const b = rt.alloc(1000, "z");
    expect(b.ptr % 256).toBe(0);
    const got = new Uint8Array(1000);
    rt.download(b, got);
    expect(got.every((v) => v === 0)).toBe(true);
    rt.free(b);
  });
});
