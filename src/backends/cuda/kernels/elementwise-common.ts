/** Checks and launch shapes shared by the elementwise launchers (norm, rope, activations, sampling). */
import { KilnError } from "../../../errors";
import type { DeviceBuffer, Dim3 } from "../runtime";

/** Threads of a one-dimensional elementwise block. */
export const ELEMENTWISE_THREADS = 256;
/** Most blocks an elementwise launch uses (the kernels loop over the rest). */
const MAX_ELEMENTWISE_BLOCKS = 65535;

/** Grid and block of a grid-stride launch over n > 0 elements. */
export function elementwiseShape(n: number): { grid: Dim3; block: Dim3 } {
  return { grid: [Math.min(Math.ceil(n / ELEMENTWISE_THREADS), MAX_ELEMENTWISE_BLOCKS), 1, 1], block: [ELEMENTWISE_THREADS, 1, 1] };
}

/** Threads of a one-block-per-row kernel for rows of `len` elements: a multiple of 32, at most `max`. */
export function rowThreads(len: number, max = 256): number {
  return Math.max(32, Math.min(max, Math.ceil(len / 32) * 32));
}

/**
 * Throws unless a and b (the first `bytes` bytes of each) are the same range or do not overlap:
 * the kernels read and write element i in one thread, so exact aliasing is safe, a shifted
 * overlap is not.
 */
export function expectSameOrDisjoint(op: string, aName: string, a: DeviceBuffer, bName: string, b: DeviceBuffer, bytes: number): void {
  if (a.ptr === b.ptr) return;
  if (a.ptr < b.ptr + bytes && b.ptr < a.ptr + bytes) {
    throw new KilnError("SHAPE", `${op}: ${aName} (${a.label}) and ${bName} (${b.label}) overlap without being the same buffer`);
  }
}

/** Throws unless v is a finite number (an f32 argument). */
export function expectFinite(op: string, what: string, v: number, min = -Infinity): void {
  if (typeof v !== "number" || !Number.isFinite(v) || v < min) {
    throw new KilnError("SHAPE", `${op}: ${what} must be a finite number${min > -Infinity ? ` ≥ ${min}` : ""}, got ${v}`);
  }
}

/** Throws when [a, a + aBytes) and [b, b + bBytes) overlap. */
export function expectDisjoint(op: string, aName: string, a: DeviceBuffer, aBytes: number, bName: string, b: DeviceBuffer, bBytes: number): void {
  if (aBytes > 0 && bBytes > 0 && a.ptr < b.ptr + bBytes && b.ptr < a.ptr + aBytes) {
    throw new KilnError("SHAPE", `${op}: ${aName} (${a.label}) overlaps ${bName} (${b.label})`);
  }
}
