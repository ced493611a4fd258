/**
 * The device runtime the CUDA backend and the kernel launchers are written against: device
 * memory, copies and kernel launches. Two implementations:
 *   - CudaRuntime (driver.ts): the NVIDIA driver through libkiln's CUDA module loader (dlopen of
 *     libcuda.so.1 and NVRTC at run time; kernels compiled from cuda/*.cu, CUBINs cached);
 *   - EmulatorRuntime (emulator.ts): the same kernel sources built for the host (cuda/emu), blocks
 *     and threads run as fibers; device addresses are host addresses. Tests run every kernel on it.
 *
 * Kernels take one argument, a struct (cuda/kiln_cuda.cuh); KernelArgs packs it with C's layout.
 */
import { KilnError } from "../../errors";

/** A range of device memory: an address and a size in bytes. */
export interface DeviceBuffer {
  /** Device address (on the emulator, a host address). */
  readonly ptr: number;
  /** Its size in bytes. */
  readonly byteLength: number;
  /** What it holds, for error messages ("blk.0.attn_q.weight", "kv cache"). */
  readonly label: string;
}

export type Dim3 = readonly [number, number, number];

/** Launches recorded once (captureGraph) and replayed together: one launch call per replay. */
export interface DeviceGraph {
  launch(): void;
  dispose(): void;
}

export interface DeviceRuntime {
  readonly kind: "cuda" | "emulator";
  /** Device ordinal (0 on the emulator). */
  readonly deviceIndex: number;
  /** Human-readable device name. */
  readonly deviceName: string;
  alloc(byteLength: number, label: string): DeviceBuffer;
  free(b: DeviceBuffer): void;
  /** Copies src into dst at dstOffset (bytes). */
  upload(dst: DeviceBuffer, src: Uint8Array, dstOffset?: number): void;
  /** Copies dst.byteLength bytes of src from srcOffset into dst. */
  download(src: DeviceBuffer, dst: Uint8Array, srcOffset?: number): void;
  /** Runs `kernel` (a KILN_KERNEL name in cuda/*.cu) with one packed argument struct. */
  launch(kernel: string, grid: Dim3, block: Dim3, sharedBytes: number, args: Uint8Array): void;
  /** Waits for every launched kernel and copy. */
  synchronize(): void;
  /**
   * Records the launches fn makes, without running them, as a graph to replay. Argument bytes
   * are frozen at capture: what changes between replays must be read from device memory.
   * Copies and synchronize are refused while recording.
   */
  captureGraph(fn: () => void): DeviceGraph;
  /** Compiles and loads these kernels now rather than at their first launch (optional). */
  prepare?(kernels: readonly string[]): void;
  dispose(): void;
}

/** A sub-range of a buffer, bounds-checked. */
export function subBuffer(b: DeviceBuffer, byteOffset: number, byteLength: number, label = b.label): DeviceBuffer {
  if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength) || byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > b.byteLength) {
    throw new KilnError("SHAPE", `device buffer ${b.label}: range [${byteOffset}, ${byteOffset + byteLength}) is outside its ${b.byteLength} bytes`);
  }
  return { ptr: b.ptr + byteOffset, byteLength, label };
}

/** Throws unless `b` holds at least `need` bytes (a launcher's check before a pointer crosses). */
export function expectBytes(op: string, what: string, b: DeviceBuffer, need: number): void {
  if (!Number.isSafeInteger(need) || need < 0) throw new KilnError("SHAPE", `${op}: ${what} needs an invalid byte count (${need})`);
  if (b.byteLength < need) throw new KilnError("SHAPE", `${op}: ${what} (${b.label}) has ${b.byteLength} bytes, needs ${need}`);
}

/** Throws unless n is an integer in [min, 2^31). Kernel sizes are i32. */
export function expectInt(op: string, what: string, n: number, min = 0): void {
  if (!Number.isSafeInteger(n) || n < min || n >= 2 ** 31) throw new KilnError("SHAPE", `${op}: ${what} must be an integer in [${min}, 2^31), got ${n}`);
}

/**
 * Packs a kernel's argument struct with C's layout: each field at its natural alignment, the
 * whole padded to 8 bytes. Field order must be the struct's.
 */
export class KernelArgs {
  readonly #buf = new ArrayBuffer(256);
  readonly #view = new DataView(this.#buf);
  #at = 0;

  #align(n: number): number {
    this.#at = (this.#at + n - 1) & ~(n - 1);
    if (this.#at + n > this.#buf.byteLength) throw new KilnError("BAD_OPTION", "KernelArgs: more than 256 bytes of arguments");
    const at = this.#at;
    this.#at += n;
    return at;
  }
  /** A device pointer (null: 0). */
  ptr(b: DeviceBuffer | null): this {
    this.#view.setBigUint64(this.#align(8), BigInt(b ? b.ptr : 0), true);
    return this;
  }
  u64(v: number): this {
    this.#view.setBigUint64(this.#align(8), BigInt(v), true);
    return this;
  }
  i32(v: number): this {
    this.#view.setInt32(this.#align(4), v, true);
    return this;
  }
  u32(v: number): this {
    this.#view.setUint32(this.#align(4), v >>> 0, true);
    return this;
  }
  f32(v: number): this {
    this.#view.setFloat32(this.#align(4), v, true);
    return this;
  }
  /** The packed struct (its size padded to 8). */
  bytes(): Uint8Array {
    const n = (this.#at + 7) & ~7;
    return new Uint8Array(this.#buf, 0, Math.max(n, 8));
  }
}
