/**
 * EmulatorRuntime: the DeviceRuntime of the host emulator. The kernels of cuda/*.cu are built
 * for the host (scripts/build-cuda-emu.sh → zig-out/lib/libkiln-cuda-emu-<stem>.so, each with
 * cuda/emu/emu.cpp): every block's threads run as fibers with real barriers, warp shuffles and
 * MMA fragment layouts, and device addresses are host addresses. Tests run every kernel on it
 * and compare with the CPU kernels; nothing here needs a GPU.
 *
 * In a checkout, the first EmulatorRuntime of a process rebuilds libraries older than their
 * sources (set KILN_CUDA_EMU_NO_BUILD=1 to skip that); a .cu that does not compile is reported
 * on stderr and its kernels are then unknown to the runtime.
 */
import { dlopen, FFIType, toArrayBuffer, type Library } from "bun:ffi";
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { KilnError } from "../../errors";
import type { DeviceBuffer, DeviceGraph, DeviceRuntime, Dim3 } from "./runtime";

const ROOT = resolve(import.meta.dir, "../../..");
const BUILD_COMMAND = "bash scripts/build-cuda-emu.sh";

const symbols = {
  kiln_emu_launch: {
    args: [FFIType.ptr, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.ptr, FFIType.u64],
    returns: FFIType.i32,
  },
  kiln_emu_last_error: { args: [], returns: FFIType.cstring },
  kiln_emu_kernel_count: { args: [], returns: FFIType.i32 },
  kiln_emu_kernel_name: { args: [FFIType.i32], returns: FFIType.cstring },
  kiln_emu_kernel_arg_bytes: { args: [FFIType.i32], returns: FFIType.u64 },
  kiln_emu_alloc: { args: [FFIType.u64], returns: FFIType.ptr },
  kiln_emu_free: { args: [FFIType.ptr], returns: FFIType.void },
} as const;

type EmuLibrary = Library<typeof symbols>;

interface KernelEntry {
  name: string;
  argBytes: number;
  lib: EmuLibrary;
  file: string;
  /** The kernel name as a NUL-terminated C string. */
  cname: Buffer;
}

interface Loaded {
  kernels: Map<string, KernelEntry>;
  libs: EmuLibrary[];
}

let loaded: Loaded | undefined;

function libDir(): string {
  return process.env.KILN_CUDA_EMU_DIR ?? join(ROOT, "zig-out", "lib");
}

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -1;
  }
}

/** The emulator libraries a checkout's sources call for, and whether any is missing or older than its inputs. */
function needsBuild(): boolean {
  const cuda = join(ROOT, "cuda");
  const script = join(ROOT, "scripts", "build-cuda-emu.sh");
  if (!existsSync(script) || !existsSync(join(cuda, "emu", "emu.cpp"))) return false;
  const list = (dir: string, ext: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(ext)).map((f) => join(dir, f)) : []);
  const common = Math.max(mtime(join(cuda, "emu", "emu.cpp")), mtime(script), ...list(cuda, ".cuh").map(mtime));
  const sources = [...list(cuda, ".cu").map((f) => [f, ""] as const), ...list(join(cuda, "emu"), ".cu").map((f) => [f, "emu-"] as const)];
  for (const [src, prefix] of sources) {
    const lib = join(libDir(), `libkiln-cuda-emu-${prefix}${basename(src, ".cu")}.so`);
    const built = mtime(lib);
    if (built < 0 || built < Math.max(common, mtime(src))) return true;
  }
  return false;
}

function build(): void {
  if (process.env.KILN_CUDA_EMU_NO_BUILD === "1" || process.env.KILN_CUDA_EMU_DIR) return;
  if (!needsBuild()) return;
  process.stderr.write(`[cuda-emu] emulator libraries are missing or stale: running ${BUILD_COMMAND}\n`);
  const r = Bun.spawnSync(["bash", join(ROOT, "scripts", "build-cuda-emu.sh")], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    process.stderr.write(
      `[cuda-emu] ${BUILD_COMMAND} failed (exit ${r.exitCode}); the kernels of the files that did not build are unknown to the emulator:\n` +
        r.stdout.toString() +
        r.stderr.toString(),
    );
  }
}

function load(): Loaded {
  if (loaded) return loaded;
  build();
  const dir = libDir();
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^libkiln-cuda-emu-.+\.so$/.test(f)).sort() : [];
  if (files.length === 0) {
    throw new KilnError("LIBRARY", `CUDA emulator: no libkiln-cuda-emu-*.so in ${dir}; build them with \`${BUILD_COMMAND}\``);
  }
  const kernels = new Map<string, KernelEntry>();
  const libs: EmuLibrary[] = [];
  for (const f of files) {
    const path = join(dir, f);
    let lib: EmuLibrary;
    try {
      lib = dlopen(path, symbols);
    } catch (e) {
      throw new KilnError("LIBRARY", `CUDA emulator: cannot load ${path} (${(e as Error).message}); rebuild with \`${BUILD_COMMAND}\``);
    }
    libs.push(lib);
    const n = lib.symbols.kiln_emu_kernel_count();
    for (let i = 0; i < n; i++) {
      const name = String(lib.symbols.kiln_emu_kernel_name(i));
      const argBytes = Number(lib.symbols.kiln_emu_kernel_arg_bytes(i));
      const prev = kernels.get(name);
      if (prev) throw new KilnError("LIBRARY", `CUDA emulator: kernel ${name} is registered twice (${prev.file} and ${f}); kernel names must be unique across cuda/`);
      kernels.set(name, { name, argBytes, lib, file: f, cname: Buffer.from(`${name}\0`, "latin1") });
    }
  }
  loaded = { kernels, libs };
  return loaded;
}

/** Every kernel the emulator libraries register, with the sizeof of its argument struct. */
export function emulatorKernels(): { name: string; argBytes: number }[] {
  return [...load().kernels.values()].map((k) => ({ name: k.name, argBytes: k.argBytes }));
}

function emuError(message: string): KilnError {
  return new KilnError("CUDA_EMULATOR", message);
}

function checkDim(kernel: string, what: string, d: Dim3, max: readonly [number, number, number]): void {
  if (!Array.isArray(d) || d.length !== 3) throw emuError(`kernel ${kernel}: ${what} must be [x, y, z], got ${String(d)}`);
  for (let i = 0; i < 3; i++) {
    const v = d[i]!;
    if (!Number.isSafeInteger(v) || v < 1 || v > max[i]!) {
      throw emuError(`kernel ${kernel}: ${what} [${d.join(", ")}] has ${"xyz"[i]} = ${v}, must be an integer in [1, ${max[i]}]`);
    }
  }
}

interface Allocation {
  ptr: number;
  byteLength: number;
  label: string;
}

export class EmulatorRuntime implements DeviceRuntime {
  readonly kind = "emulator" as const;
  readonly deviceIndex = 0;
  readonly deviceName = "host emulator";
  readonly #lib: Loaded;
  readonly #allocs = new Map<number, Allocation>();
  #disposed = false;
  /** While captureGraph records: the launches, not run. */
  #recording: { kernel: string; grid: Dim3; block: Dim3; sharedBytes: number; args: Uint8Array }[] | null = null;

  constructor() {
    this.#lib = load();
  }

  #live(): void {
    if (this.#disposed) throw new KilnError("DISPOSED", "EmulatorRuntime: used after dispose()");
  }

  alloc(byteLength: number, label: string): DeviceBuffer {
    this.#live();
    if (!Number.isSafeInteger(byteLength) || byteLength < 0) throw emuError(`alloc ${label}: byteLength must be a non-negative integer, got ${byteLength}`);
    const lib = this.#lib.libs[0]!;
    const ptr = lib.symbols.kiln_emu_alloc(byteLength) as number | null;
    if (!ptr) throw emuError(`alloc ${label}: out of host memory (${byteLength} bytes)`);
    this.#allocs.set(ptr, { ptr, byteLength, label });
    return { ptr, byteLength, label };
  }

  free(b: DeviceBuffer): void {
    this.#live();
    const a = this.#allocs.get(b.ptr);
    if (!a) throw emuError(`free ${b.label}: not a live allocation of this runtime (freed twice, or a sub-buffer)`);
    this.#allocs.delete(b.ptr);
    this.#lib.libs[0]!.symbols.kiln_emu_free(a.ptr);
  }

  /** Throws unless [ptr, ptr + len) lies in one live allocation (a freed or foreign buffer would be a wild write). */
  #checkRange(op: string, b: DeviceBuffer, offset: number, len: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + len > b.byteLength) {
      throw emuError(`${op} ${b.label}: range [${offset}, ${offset + len}) is outside its ${b.byteLength} bytes`);
    }
    const lo = b.ptr + offset;
    const hi = lo + len;
    const exact = this.#allocs.get(b.ptr);
    if (exact && hi <= exact.ptr + exact.byteLength) return;
    for (const a of this.#allocs.values()) if (lo >= a.ptr && hi <= a.ptr + a.byteLength) return;
    throw emuError(`${op} ${b.label}: its memory is not a live allocation of this runtime (freed, or from another runtime)`);
  }

  upload(dst: DeviceBuffer, src: Uint8Array, dstOffset = 0): void {
    this.#live();
    this.#notRecording("upload");
    this.#checkRange("upload to", dst, dstOffset, src.byteLength);
    if (src.byteLength === 0) return;
    new Uint8Array(toArrayBuffer(dst.ptr + dstOffset, 0, src.byteLength)).set(src);
  }

  download(src: DeviceBuffer, dst: Uint8Array, srcOffset = 0): void {
    this.#live();
    this.#notRecording("download");
    this.#checkRange("download from", src, srcOffset, dst.byteLength);
    if (dst.byteLength === 0) return;
    dst.set(new Uint8Array(toArrayBuffer(src.ptr + srcOffset, 0, dst.byteLength)));
  }

  launch(kernel: string, grid: Dim3, block: Dim3, sharedBytes: number, args: Uint8Array): void {
    this.#live();
    const k = this.#lib.kernels.get(kernel);
    if (!k) {
      throw emuError(`unknown kernel ${kernel}: no emulator library registers it (is it declared with KILN_KERNEL in cuda/*.cu, and did \`${BUILD_COMMAND}\` build that file?)`);
    }
    checkDim(kernel, "grid", grid, [2 ** 31 - 1, 65535, 65535]);
    checkDim(kernel, "block", block, [1024, 1024, 64]);
    const threads = block[0] * block[1] * block[2];
    if (threads > 1024) throw emuError(`kernel ${kernel}: block [${block.join(", ")}] has ${threads} threads, at most 1024`);
    if (!Number.isSafeInteger(sharedBytes) || sharedBytes < 0) throw emuError(`kernel ${kernel}: sharedBytes must be a non-negative integer, got ${sharedBytes}`);
    if (args.byteLength !== k.argBytes) throw emuError(`kernel ${kernel} takes ${k.argBytes} argument bytes, got ${args.byteLength}`);
    if (this.#recording) {
      // As a CUDA stream capture: recorded with its argument bytes as they are now, not run.
      this.#recording.push({ kernel, grid: [...grid], block: [...block], sharedBytes, args: args.slice() });
      return;
    }
    // bun:ffi passes a typed array's data pointer; a zero-length one has none, so pad it.
    const a = args.byteLength > 0 ? args : new Uint8Array(8);
    const rc = k.lib.symbols.kiln_emu_launch(k.cname, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, a, args.byteLength);
    if (rc !== 0) {
      const msg = String(k.lib.symbols.kiln_emu_last_error());
      throw emuError(msg.startsWith(`kernel ${kernel}`) ? msg : `kernel ${kernel}: ${msg}`);
    }
  }

  synchronize(): void {
    this.#live();
    this.#notRecording("synchronize");
  }

  /** As the driver during a stream capture: copies and synchronization are refused. */
  #notRecording(op: string): void {
    if (this.#recording) throw emuError(`${op} while capturing a graph (the driver refuses it during a stream capture)`);
  }

  /**
   * Records the launches fn makes (nothing runs, as in a CUDA stream capture); the graph replays
   * them, each with the argument bytes it had when recorded.
   */
  captureGraph(fn: () => void): DeviceGraph {
    this.#live();
    if (this.#recording) throw emuError("captureGraph: already capturing (graphs do not nest)");
    const launches: { kernel: string; grid: Dim3; block: Dim3; sharedBytes: number; args: Uint8Array }[] = [];
    this.#recording = launches;
    try {
      fn();
    } finally {
      this.#recording = null;
    }
    let disposed = false;
    return {
      launch: () => {
        if (disposed) throw new KilnError("DISPOSED", "emulator graph: launched after dispose()");
        for (const l of launches) this.launch(l.kernel, l.grid, l.block, l.sharedBytes, l.args);
      },
      dispose: () => {
        disposed = true;
      },
    };
  }

  /** Frees every allocation still live. The libraries stay loaded (shared by the process's runtimes). */
  dispose(): void {
    if (this.#disposed) return;
    for (const a of this.#allocs.values()) this.#lib.libs[0]!.symbols.kiln_emu_free(a.ptr);
    this.#allocs.clear();
    this.#disposed = true;
  }
}
