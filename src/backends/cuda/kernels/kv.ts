/** Launcher of cuda/kv.cu. */
import { KernelArgs, expectBytes, expectInt, type DeviceBuffer, type DeviceRuntime } from "../runtime";

/**
 * cache rows [pos[0], pos[0] + nRows) of rowElems f16 = f16(src rows): the position is read on
 * the device (a graph replays the same launch every token). `capacity`: rows the cache holds.
 */
export function storeKvF16At(rt: DeviceRuntime, src: DeviceBuffer, cache: DeviceBuffer, pos: DeviceBuffer, rowElems: number, nRows: number, capacity: number): void {
  const op = "storeKvF16At";
  expectInt(op, "rowElems", rowElems, 1);
  expectInt(op, "nRows", nRows, 1);
  expectInt(op, "capacity", capacity, nRows);
  expectInt(op, "nRows × rowElems", nRows * rowElems, 1);
  expectBytes(op, "src", src, nRows * rowElems * 4);
  expectBytes(op, "cache", cache, capacity * rowElems * 2);
  expectBytes(op, "pos", pos, 4);
  const args = new KernelArgs().ptr(src).ptr(cache).ptr(pos).i32(rowElems).i32(nRows).i32(capacity).bytes();
  rt.launch("kiln_store_kv_f16_at", [Math.ceil((nRows * rowElems) / 256), 1, 1], [256, 1, 1], 0, args);
}
