/**
 * `kiln/ops`: the kernel-level op set — the tensor type and every op of the CPU backend — for
 * code that composes its own model from kiln's kernels. Pure re-exports; the ops themselves
 * live in src/backends/cpu.ts.
 *
 *   import { matmul, rmsNorm, Tensor, NativeBuffer } from "kiln/ops";
 */
export * from "./backends/cpu";
export { Tensor, NativeBuffer, ShapeError, type DType } from "./tensor";
export type { KvLayout } from "./backends/backend";
