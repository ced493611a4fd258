/**
 * Launcher of cuda/rope.cu: rotary position embedding in place, with zig-kernels/rope.zig's
 * (ggml's) order of f32 operations (src/backends/cpu.ts rope).
 */
import { KilnError } from "../../../errors";
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";
import { expectFinite, rowThreads } from "./elementwise-common";

/** Largest nRot the kernel takes (its per-row cos/sin table). */
export const MAX_ROPE_ROT = 1024;

/** "normal" (ggml mode 0, pairs (2k, 2k+1)) or "neox" (mode 2, pairs (k, k + nRot/2)); the numbers are accepted too. */
export type RopeMode = "normal" | "neox" | 0 | 2;

/**
 * Rotates the first nRot dims of every head of x [rows][nHead][headDim] in place, row r at
 * positions[r] (i32). freqFactors (nRot/2 floats) divides each pair's angle, or null.
 */
export function rope(
  rt: DeviceRuntime,
  x: DeviceBuffer,
  positions: DeviceBuffer,
  freqFactors: DeviceBuffer | null,
  rows: number,
  nHead: number,
  headDim: number,
  nRot: number,
  mode: RopeMode,
  freqBase: number,
  freqScale: number,
): void {
  const op = "rope";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "nHead", nHead, 1);
  expectInt(op, "headDim", headDim, 1);
  expectInt(op, "nRot", nRot, 2);
  if (nRot % 2 !== 0 || nRot > headDim || nRot > MAX_ROPE_ROT) {
    throw new KilnError("SHAPE", `${op}: nRot ${nRot} must be even, ≤ headDim ${headDim} and ≤ ${MAX_ROPE_ROT}`);
  }
  const m = mode === "normal" || mode === 0 ? 0 : mode === "neox" || mode === 2 ? 2 : -1;
  if (m < 0) throw new KilnError("SHAPE", `${op}: mode must be "normal" (0) or "neox" (2), got ${String(mode)}`);
  expectFinite(op, "freqBase", freqBase);
  if (!(freqBase > 0)) throw new KilnError("SHAPE", `${op}: freqBase must be > 0, got ${freqBase}`);
  expectFinite(op, "freqScale", freqScale);
  expectInt(op, "nHead × nRot/2", nHead * (nRot / 2), 1);
  expectBytes(op, "x", x, rows * nHead * headDim * 4);
  expectBytes(op, "positions", positions, rows * 4);
  if (freqFactors) expectBytes(op, "freqFactors", freqFactors, (nRot / 2) * 4);
  if (rows === 0) return;
  const args = new KernelArgs().ptr(x).ptr(positions).ptr(freqFactors).i32(rows).i32(nHead).i32(headDim).i32(nRot).i32(m).f32(freqBase).f32(freqScale).bytes();
  rt.launch("kiln_rope", [rows, 1, 1], [rowThreads(nHead * (nRot / 2)), 1, 1], 0, args);
}
