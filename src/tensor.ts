/**
 * A thin tensor: a dtype, a shape and a byte view. The bytes are an ArrayBuffer, a page-aligned
 * buffer owned by libkiln, or a read-only window of a mapped GGUF file; the kernels receive the
 * view itself, so nothing is copied.
 *
 * Shapes are row-major, outermost first, as in NumPy: a weight matrix of `n_out` rows of `k`
 * elements is [n_out, k]. (GGUF lists dims innermost first, `ne = [k, n_out]`; the loader
 * reverses them.) The last dimension must be a whole number of the dtype's blocks.
 */
import { toArrayBuffer } from "bun:ffi";
import { KilnError } from "./errors";
import { kiln } from "./ffi/library";
import { GGML_TYPES } from "./gguf/types";
import type { DeviceBuffer } from "./backends/cuda/runtime";

/** Where a tensor's bytes live: host memory ("cpu") or a GPU's memory ("cuda", device ordinal `index`). */
export interface Device {
  /** "cpu": host memory; "cuda": an NVIDIA GPU's memory. */
  readonly kind: "cpu" | "cuda";
  /** The device ordinal (0 for the CPU). */
  readonly index: number;
}

/** Host memory. */
export const CPU_DEVICE: Device = Object.freeze({ kind: "cpu", index: 0 });

/** `cpu`, `cuda:0`. */
export const deviceName = (d: Device) => (d.kind === "cpu" ? "cpu" : `${d.kind}:${d.index}`);

/** Device memory a tensor views: a buffer of a device runtime, on `device`. */
export interface DeviceStorage {
  /** The device the memory belongs to. */
  readonly device: Device;
  /** The range of device memory. */
  readonly buffer: DeviceBuffer;
}

/** GGML type ids of the types kiln's kernels run (values are ggml's). */
export const DTYPE_IDS = {
  f32: 0,
  f16: 1,
  q4_0: 2,
  q4_1: 3,
  q5_0: 6,
  q5_1: 7,
  q8_0: 8,
  q4_k: 12,
  q5_k: 13,
  q6_k: 14,
  bf16: 30,
} as const;

/**
 * A tensor element type kiln's kernels run: f32, f16, bf16 and the GGUF block types (q4_0 … q6_k).
 */
export type DType = keyof typeof DTYPE_IDS;

/**
 * Elements per block and bytes per block of each dtype: the GGUF layer's type table (the file
 * format's fact, src/gguf/types.ts), checked against the kernel library by a test.
 */
export const DTYPE_LAYOUT = Object.fromEntries(
  Object.entries(DTYPE_IDS).map(([name, id]) => {
    const info = GGML_TYPES.get(id);
    if (!info) throw new Error(`tensor.ts: ggml type ${id} (${name}) is missing from the GGUF type table`);
    return [name, { blockSize: info.blockSize, typeSize: info.typeSize }];
  }),
) as Record<
  DType,
  {
    /** Elements per block (1 for f32/f16/bf16, 32 or 256 for the quantized types). */
    blockSize: number;
    /** Bytes per block. */
    typeSize: number;
  }
>;

export const isDType = (s: string): s is DType => Object.hasOwn(DTYPE_IDS, s);

/** GGML type id → kiln dtype name (undefined for types the kernels do not run). */
export function dtypeOfId(id: number): DType | undefined {
  for (const [name, v] of Object.entries(DTYPE_IDS)) if (v === id) return name as DType;
  return undefined;
}

/**
 * The activation format each weight type's dot product consumes (quant.zig): float weights take
 * f32 rows, the 32-block types 8-bit blocks of 32, the K-quants 8-bit blocks of 256. Weights that
 * share a format can share one prepared copy of the activations.
 */
export const ACT_FORMAT: Record<DType, "f32" | "q8_0" | "q8_k"> = {
  f32: "f32", f16: "f32", bf16: "f32",
  q4_0: "q8_0", q4_1: "q8_0", q5_0: "q8_0", q5_1: "q8_0", q8_0: "q8_0",
  q4_k: "q8_k", q5_k: "q8_k", q6_k: "q8_k",
};

/** A shape error: names the op, the tensors and what was expected. */
export class ShapeError extends KilnError {
  /** The class name, as `Error.name` ("ShapeError"). */
  override name = "ShapeError";
  constructor(message: string) {
    super("SHAPE", message);
  }
}

function checkDim(op: string, what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new ShapeError(`${op}: ${what} must be a non-negative integer, got ${n}`);
}

/** Bytes of `n` elements of one row; throws unless n is a whole number of blocks. */
export function rowBytes(dtype: DType, n: number, op = "rowBytes"): number {
  checkDim(op, "row length", n);
  const { blockSize, typeSize } = DTYPE_LAYOUT[dtype];
  if (n % blockSize !== 0) {
    throw new ShapeError(`${op}: a ${dtype} row of ${n} elements is not a whole number of ${blockSize}-element blocks`);
  }
  const bytes = (n / blockSize) * typeSize;
  if (!Number.isSafeInteger(bytes)) throw new ShapeError(`${op}: ${n} elements of ${dtype} overflow`);
  return bytes;
}

export function byteLength(dtype: DType, shape: readonly number[], op = "byteLength"): number {
  return checkedByteLength(dtype, shape, () => op);
}

/**
 * byteLength with the op's name built only for an error message: tensors are made per decode step
 * (views of the KV cache), so the success path builds no strings and allocates nothing.
 */
function checkedByteLength(dtype: DType, shape: readonly number[], op: () => string): number {
  const nd = shape.length;
  if (nd === 0) throw new ShapeError(`${op()}: a tensor needs at least one dimension`);
  let rows = 1;
  for (let i = 0; i < nd; i++) {
    const d = shape[i]!;
    if (!Number.isSafeInteger(d) || d < 0) checkDim(op(), `dim ${i}`, d);
    if (i < nd - 1) rows *= d;
  }
  const inner = shape[nd - 1]!;
  const { blockSize } = DTYPE_LAYOUT[dtype];
  const total = rows * (inner % blockSize === 0 ? (inner / blockSize) * DTYPE_LAYOUT[dtype].typeSize : rowBytes(dtype, inner, op()));
  if (!Number.isSafeInteger(total)) throw new ShapeError(`${op()}: shape [${shape}] of ${dtype} overflows`);
  return total;
}

/** Product of all but the last dimension. */
function outerRows(shape: readonly number[]): number {
  let rows = 1;
  for (let i = 0; i < shape.length - 1; i++) rows *= shape[i]!;
  return rows;
}

/**
 * A typed, shaped view of bytes: a weight in the mapped model file, a context's buffer, or memory
 * of your own. Shapes are row-major (the last dimension is contiguous); quantized dtypes count
 * elements, stored in blocks of `DTYPE_LAYOUT[dtype].blockSize`. The ops of `kiln/ops` check a
 * tensor's dtype, shape and byte length before any kernel reads it.
 */
export class Tensor {
  /** The element type. */
  readonly dtype: DType;
  /** Dimensions, outermost first (the last is contiguous). */
  readonly shape: readonly number[];
  /**
   * The GGUF tensor name for weights (e.g. "blk.0.attn_q.weight"), else what its creator named it.
   */
  readonly name: string;
  /** The device its bytes live on (CPU_DEVICE for host memory). */
  readonly device: Device;
  readonly #bytes: Uint8Array | null;
  readonly #storage: DeviceStorage | null;
  readonly #byteLength: number;
  readonly #rows: number;
  /**
   * A private, unfrozen copy of `shape` for the ops' checks: JavaScriptCore reads a frozen
   * array's elements about ten times slower than a plain one's (40 vs 3-6 ns for two reads, Bun
   * 1.4.5), and a decode step's checks read shapes a few thousand times.
   */
  readonly #dims: number[];
  #f32?: Float32Array;

  /** `storage`: host bytes (a Uint8Array view), or device memory (DeviceStorage). */
  constructor(dtype: DType, shape: readonly number[], storage: Uint8Array | DeviceStorage, name = "") {
    const need = checkedByteLength(dtype, shape, () => `Tensor ${name || "(unnamed)"}`);
    const have = storage instanceof Uint8Array ? storage.byteLength : storage.buffer.byteLength;
    if (have !== need) {
      throw new ShapeError(`Tensor ${name || "(unnamed)"}: ${dtype} [${shape}] needs ${need} bytes, the view has ${have}`);
    }
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.#dims = [...shape];
    this.#rows = outerRows(shape);
    if (storage instanceof Uint8Array) {
      this.#bytes = storage;
      this.#storage = null;
      this.device = CPU_DEVICE;
    } else {
      this.#bytes = null;
      this.#storage = storage;
      this.device = storage.device;
    }
    this.#byteLength = need;
    this.name = name;
  }

  /** Size of its data in bytes. */
  get byteLength(): number {
    return this.#byteLength;
  }

  /**
   * The tensor's bytes in host memory. Memory kiln owns (context buffers, the mapped file) is
   * detached when it is released, so a view kept past `dispose()` reads as empty instead of
   * touching freed memory; asking a released tensor for its bytes throws KilnError DISPOSED.
   * A tensor on a GPU has no host bytes: this throws KilnError DEVICE (read it through its backend).
   */
  get bytes(): Uint8Array {
    const b = this.#bytes;
    if (!b) throw new KilnError("DEVICE", `Tensor ${this.name || "(unnamed)"} lives on ${deviceName(this.device)}: it has no host bytes (read it through its backend)`);
    if (b.byteLength !== this.#byteLength) throw new KilnError("DISPOSED", `Tensor ${this.name || "(unnamed)"}: its memory was released (model or context disposed)`);
    return b;
  }

  /** The device memory of a tensor on a GPU (throws KilnError DEVICE for a host tensor). */
  get storage(): DeviceStorage {
    if (!this.#storage) throw new KilnError("DEVICE", `Tensor ${this.name || "(unnamed)"} lives in host memory, not on a device`);
    return this.#storage;
  }

  /** Whether its bytes are host memory. */
  get onHost(): boolean {
    return this.#bytes !== null;
  }

  /** A zero-filled tensor on the JS heap. */
  static zeros(dtype: DType, shape: readonly number[], name = ""): Tensor {
    return new Tensor(dtype, shape, new Uint8Array(byteLength(dtype, shape, "Tensor.zeros")), name);
  }

  static fromF32(data: Float32Array, shape: readonly number[], name = ""): Tensor {
    return new Tensor("f32", shape, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), name);
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.#dims.length;
  }

  /** Length of the last (contiguous) dimension. */
  get cols(): number {
    return this.#dims[this.#dims.length - 1]!;
  }

  /** shape[i], without reading the frozen `shape`; throws ShapeError past the rank. */
  dim(i: number): number {
    const d = this.#dims[i];
    if (d === undefined) throw new ShapeError(`Tensor ${this.name || "(unnamed)"}: no dimension ${i} in shape [${this.shape.join(", ")}]`);
    return d;
  }

  /** Whether the shape is `other`'s (a tensor's, or dimensions outermost first). */
  hasShape(other: Tensor | readonly number[]): boolean {
    const d = this.#dims;
    const o = other instanceof Tensor ? other.#dims : other;
    if (o.length !== d.length) return false;
    for (let i = 0; i < d.length; i++) if (d[i] !== o[i]) return false;
    return true;
  }

  /** Product of all but the last dimension. */
  get rows(): number {
    return this.#rows;
  }

  /** Number of elements (rows × cols). */
  get numel(): number {
    return this.rows * this.cols;
  }

  /** Float32 view of an f32 tensor (cached). */
  get f32(): Float32Array {
    if (this.dtype !== "f32") throw new ShapeError(`Tensor ${this.name}: .f32 on a ${this.dtype} tensor`);
    const b = this.bytes;
    this.#f32 ??= new Float32Array(b.buffer, b.byteOffset, this.numel);
    return this.#f32;
  }

  /** Rows [start, start+count) along the first dimension, as a view (no copy). */
  sliceRows(start: number, count: number): Tensor {
    const outer = this.#dims[0]!;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 || start + count > outer) {
      throw new ShapeError(`Tensor ${this.name}: rows [${start}, ${start + count}) out of range for shape [${this.shape}]`);
    }
    const per = this.#byteLength / outer;
    const shape = [count, ...this.#dims.slice(1)];
    if (this.#storage) {
      const b = this.#storage.buffer;
      const view = { ptr: b.ptr + start * per, byteLength: count * per, label: b.label };
      return new Tensor(this.dtype, shape, { device: this.device, buffer: view }, this.name);
    }
    return new Tensor(this.dtype, shape, this.bytes.subarray(start * per, (start + count) * per), this.name);
  }

  /** The same bytes under another shape with the same byte length. */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.dtype, shape, this.#storage ?? this.bytes, this.name);
  }

  /** `Tensor(name, dtype [shape])`. */
  toString(): string {
    const where = this.#storage ? ` on ${deviceName(this.device)}` : "";
    return `Tensor(${this.name ? this.name + ", " : ""}${this.dtype} [${this.shape.join(", ")}]${where})`;
  }
}

/**
 * Page-aligned memory owned by libkiln (activations, KV caches): it never moves, so views over
 * it stay valid, and it is returned with `free()` (after which using the view throws).
 */
export class NativeBuffer {
  #addr: number | null;
  /** Size in bytes. */
  readonly byteLength: number;
  #view: Uint8Array | null;

  constructor(byteLength: number) {
    checkDim("NativeBuffer", "byteLength", byteLength);
    if (byteLength === 0) throw new ShapeError("NativeBuffer: byteLength must be > 0");
    const addr = kiln().kiln_alloc(byteLength);
    if (!addr) throw new Error(`NativeBuffer: could not allocate ${byteLength} bytes`);
    this.#addr = addr as number;
    this.byteLength = byteLength;
    this.#view = new Uint8Array(toArrayBuffer(addr, 0, byteLength));
  }

  /** The memory as bytes (throws KilnError DISPOSED after `free()`). */
  get bytes(): Uint8Array {
    if (!this.#view) throw new KilnError("DISPOSED", "NativeBuffer: used after free()");
    return this.#view;
  }

  /** A tensor over `byteOffset..` of this buffer (throws ShapeError when it does not fit). */
  tensor(dtype: DType, shape: readonly number[], byteOffset = 0, name = ""): Tensor {
    const len = byteLength(dtype, shape, "NativeBuffer.tensor");
    if (byteOffset < 0 || byteOffset + len > this.byteLength) {
      throw new ShapeError(`NativeBuffer.tensor: ${dtype} [${shape}] at offset ${byteOffset} does not fit in ${this.byteLength} bytes`);
    }
    return new Tensor(dtype, shape, this.bytes.subarray(byteOffset, byteOffset + len), name);
  }

  /** Returns the memory. Every view of it (tensors, typed arrays handed out) is detached first: it reads as empty, never as freed memory. */
  free(): void {
    if (this.#addr === null) return;
    detach(this.#view!.buffer);
    kiln().kiln_free(this.#addr, this.byteLength);
    this.#addr = null;
    this.#view = null;
  }
}

/**
 * Detaches an ArrayBuffer over native memory (from bun:ffi's toArrayBuffer) before that memory
 * is returned: every typed array over it then has length 0, so a view kept by a caller reads
 * `undefined` instead of freed memory (measured: ~20 µs, nothing copied).
 */
export function detach(buffer: ArrayBufferLike): void {
  if (buffer instanceof ArrayBuffer && !buffer.detached) buffer.transfer(0);
}
