/** Launcher of cuda/copy.cu. */
import { KilnError } from "../../../errors";
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";

/** dst[0..n) = src[0..n) (f32; the ranges must not overlap: threads copy in no particular order). */
export function copyF32(rt: DeviceRuntime, src: DeviceBuffer, dst: DeviceBuffer, n: number): void {
  const op = "copyF32";
  expectInt(op, "n", n, 1);
  expectBytes(op, "src", src, n * 4);
  expectBytes(op, "dst", dst, n * 4);
  if (dst.ptr < src.ptr + n * 4 && src.ptr < dst.ptr + n * 4) throw new KilnError("SHAPE", `${op}: dst (${dst.label}) overlaps src`);
  const args = new KernelArgs().ptr(src).ptr(dst).i32(n).bytes();
  rt.launch("kiln_copy_f32", [Math.ceil(n / 256), 1, 1], [256, 1, 1], 0, args);
}
