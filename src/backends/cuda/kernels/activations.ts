/**
 * Launchers of cuda/activations.cu: elementwise f32 kernels with src/backends/cpu.ts's semantics
 * (siluMul, geluTanhMul, add, addBias, mul, scale) and the f32 → f16 store of the KV cache.
 * A count of 0 launches nothing.
 */
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";
import { elementwiseShape, expectDisjoint, expectFinite, expectSameOrDisjoint } from "./elementwise-common";

function gated(kernel: string, op: string, rt: DeviceRuntime, gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer, n: number): void {
  expectInt(op, "n", n, 0);
  const bytes = n * 4;
  expectBytes(op, "gate", gate, bytes);
  expectBytes(op, "up", up, bytes);
  expectBytes(op, "out", out, bytes);
  expectSameOrDisjoint(op, "out", out, "gate", gate, bytes);
  expectSameOrDisjoint(op, "out", out, "up", up, bytes);
  if (n === 0) return;
  const { grid, block } = elementwiseShape(n);
  rt.launch(kernel, grid, block, 0, new KernelArgs().ptr(gate).ptr(up).ptr(out).i32(n).bytes());
}

/** out = silu(gate) ⊙ up over n floats (out may be gate or up). */
export function siluMul(rt: DeviceRuntime, gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer, n: number): void {
  gated("kiln_silu_mul", "siluMul", rt, gate, up, out, n);
}

/** out = gelu_tanh(gate) ⊙ up over n floats (out may be gate or up). */
export function geluTanhMul(rt: DeviceRuntime, gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer, n: number): void {
  gated("kiln_gelu_tanh_mul", "geluTanhMul", rt, gate, up, out, n);
}

function binary(kernel: string, op: string, rt: DeviceRuntime, dst: DeviceBuffer, src: DeviceBuffer, n: number): void {
  expectInt(op, "n", n, 0);
  expectBytes(op, "dst", dst, n * 4);
  expectBytes(op, "src", src, n * 4);
  expectSameOrDisjoint(op, "dst", dst, "src", src, n * 4);
  if (n === 0) return;
  const { grid, block } = elementwiseShape(n);
  rt.launch(kernel, grid, block, 0, new KernelArgs().ptr(dst).ptr(src).i32(n).bytes());
}

/** dst += src over n floats. */
export function add(rt: DeviceRuntime, dst: DeviceBuffer, src: DeviceBuffer, n: number): void {
  binary("kiln_add", "add", rt, dst, src, n);
}

/** dst ⊙= src over n floats. */
export function mul(rt: DeviceRuntime, dst: DeviceBuffer, src: DeviceBuffer, n: number): void {
  binary("kiln_mul", "mul", rt, dst, src, n);
}

/** x[r] += bias for each of `rows` rows of `cols` floats. */
export function addBias(rt: DeviceRuntime, x: DeviceBuffer, bias: DeviceBuffer, rows: number, cols: number): void {
  const op = "addBias";
  expectInt(op, "rows", rows, 0);
  expectInt(op, "cols", cols, 1);
  expectBytes(op, "x", x, rows * cols * 4);
  expectBytes(op, "bias", bias, cols * 4);
  expectDisjoint(op, "bias", bias, cols * 4, "x", x, rows * cols * 4);
  if (rows === 0) return;
  const { grid, block } = elementwiseShape(rows * cols);
  rt.launch("kiln_add_bias", grid, block, 0, new KernelArgs().ptr(x).ptr(bias).i32(rows).i32(cols).bytes());
}

/** x *= s over n floats. */
export function scale(rt: DeviceRuntime, x: DeviceBuffer, n: number, s: number): void {
  const op = "scale";
  expectInt(op, "n", n, 0);
  expectFinite(op, "s", s);
  expectBytes(op, "x", x, n * 4);
  if (n === 0) return;
  const { grid, block } = elementwiseShape(n);
  rt.launch("kiln_scale", grid, block, 0, new KernelArgs().ptr(x).i32(n).f32(s).bytes());
}

/** dst[i] = f16(src[i]) (round to nearest even) over n values: the f16 KV cache store. */
export function f32ToF16(rt: DeviceRuntime, src: DeviceBuffer, dst: DeviceBuffer, n: number): void {
  const op = "f32ToF16";
  expectInt(op, "n", n, 0);
  expectBytes(op, "src", src, n * 4);
  expectBytes(op, "dst", dst, n * 2);
  expectDisjoint(op, "dst", dst, n * 2, "src", src, n * 4);
  if (n === 0) return;
  const { grid, block } = elementwiseShape(n);
  rt.launch("kiln_f32_to_f16", grid, block, 0, new KernelArgs().ptr(src).ptr(dst).i32(n).bytes());
}
