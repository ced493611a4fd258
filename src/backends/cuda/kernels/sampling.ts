/** Launchers of cuda/sampling.cu: per-row argmax (greedy sampling on the device) and softmax. */
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";
import { expectDisjoint, rowThreads } from "./elementwise-common";

/**
 * out[r] (i32) = the first index of the largest value of row r of x [rows][cols]; NaN never
 * wins, and a row with no value above -Infinity gets -1 (src/runtime/sampling.ts argmax throws there).
 */
export function argmaxRows(rt: DeviceRuntime, x: DeviceBuffer, out: DeviceBuffer, rows: number, cols: number): void {
  const op = "argmaxRows";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "cols", cols, 1);
  expectBytes(op, "x", x, rows * cols * 4);
  expectBytes(op, "out", out, rows * 4);
  expectDisjoint(op, "out", out, rows * 4, "x", x, rows * cols * 4);
  if (rows === 0) return;
  rt.launch("kiln_argmax_rows", [rows, 1, 1], [rowThreads(cols), 1, 1], 0, new KernelArgs().ptr(x).ptr(out).i32(rows).i32(cols).bytes());
}

/** Softmax of each row of x [rows][cols] in place (src/backends/cpu.ts softmax): -Infinity entries get 0, a row of only -Infinity becomes zeros. */
export function softmaxRows(rt: DeviceRuntime, x: DeviceBuffer, rows: number, cols: number): void {
  const op = "softmaxRows";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "cols", cols, 1);
  expectBytes(op, "x", x, rows * cols * 4);
  if (rows === 0) return;
  rt.launch("kiln_softmax_rows", [rows, 1, 1], [rowThreads(cols), 1, 1], 0, new KernelArgs().ptr(x).i32(rows).i32(cols).bytes());
}
