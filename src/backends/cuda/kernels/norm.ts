/**
 * Launchers of cuda/norm.cu: RMSNorm (optionally fused with the residual add) and per-head
 * RMSNorm (QK-norm), with zig-kernels/norm.zig's numerics (src/backends/cpu.ts rmsNorm,
 * rmsNormHeads).
 */
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";
import { expectFinite, expectSameOrDisjoint, rowThreads } from "./elementwise-common";

/**
 * For each of `rows` rows of `cols` floats: x += residual (when given; x is updated), then
 * out = x / sqrt(mean(x²) + eps) · weight (weight null: no scale). out may be x.
 */
export function rmsNorm(
  rt: DeviceRuntime,
  x: DeviceBuffer,
  residual: DeviceBuffer | null,
  weight: DeviceBuffer | null,
  out: DeviceBuffer,
  rows: number,
  cols: number,
  eps: number,
): void {
  const op = "rmsNorm";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "cols", cols, 1);
  expectFinite(op, "eps", eps, 0);
  const bytes = rows * cols * 4;
  expectBytes(op, "x", x, bytes);
  expectBytes(op, "out", out, bytes);
  if (residual) {
    expectBytes(op, "residual", residual, bytes);
    expectSameOrDisjoint(op, "residual", residual, "x", x, bytes);
  }
  if (weight) expectBytes(op, "weight", weight, cols * 4);
  expectSameOrDisjoint(op, "out", out, "x", x, bytes);
  if (rows === 0) return;
  const args = new KernelArgs().ptr(x).ptr(residual).ptr(weight).ptr(out).i32(rows).i32(cols).f32(eps).bytes();
  rt.launch("kiln_rmsnorm", [rows, 1, 1], [rowThreads(cols), 1, 1], 0, args);
}

/** In place: each headDim-long head of each of `rows` rows [nHead][headDim] is RMS-normalized and scaled by weight[headDim]. */
export function rmsNormHeads(rt: DeviceRuntime, x: DeviceBuffer, weight: DeviceBuffer, rows: number, nHead: number, headDim: number, eps: number): void {
  const op = "rmsNormHeads";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "nHead", nHead, 1);
  expectInt(op, "headDim", headDim, 1);
  expectInt(op, "rows × nHead", rows * nHead, 0);
  expectFinite(op, "eps", eps, 0);
  expectBytes(op, "x", x, rows * nHead * headDim * 4);
  expectBytes(op, "weight", weight, headDim * 4);
  if (rows === 0) return;
  const args = new KernelArgs().ptr(x).ptr(weight).i32(rows).i32(nHead).i32(headDim).f32(eps).bytes();
  rt.launch("kiln_rmsnorm_heads", [rows * nHead, 1, 1], [rowThreads(headDim), 1, 1], 0, args);
}
