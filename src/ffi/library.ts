/**
 * The one dlopen table of kiln: every symbol of libkiln with its C signature, and the choice of
 * which CPU-level build to load.
 *
 * Rules this file keeps (Bun FFI pitfalls):
 * - typed arrays are passed directly as `ptr` arguments, never through a cached `ptr()` number:
 *   small typed arrays live inside their JS object and can move between calls;
 * - structs never cross by value: only pointers, lengths and strides;
 * - 64-bit returns are read with the `_fast` types, which give a number when it fits.
 */
import { dlopen, FFIType, suffix } from "bun:ffi";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const { ptr, u32, u64, i32, i64_fast, f32, f64, void: none } = FFIType;

/** ABI version this binding was written for; must equal kiln_abi_version(). */
export const ABI_VERSION = 3;

export const symbols = {
  kiln_abi_version: { args: [], returns: u32 },
  kiln_cpu_level: { args: [], returns: u32 },
  kiln_limit: { args: [u32], returns: i64_fast },
  kiln_set_threads: { args: [u32], returns: u32 },
  kiln_get_threads: { args: [], returns: u32 },

  kiln_type_block_size: { args: [u32], returns: i64_fast },
  kiln_type_size: { args: [u32], returns: i64_fast },
  kiln_act_row_bytes: { args: [u32, u64], returns: i64_fast },
  kiln_dequantize_row: { args: [u32, ptr, ptr, u64], returns: i32 },
  kiln_quantize_row: { args: [u32, ptr, ptr, u64], returns: i32 },
  kiln_get_rows: { args: [u32, ptr, u64, ptr, u64, ptr], returns: i32 },
  kiln_quantize_act: { args: [u32, ptr, u64, u64, u64, ptr], returns: i32 },

  kiln_matmul: { args: [u32, ptr, u64, u64, ptr, u64, ptr, u64], returns: i32 },
  kiln_ffn_gated: { args: [u32, ptr, ptr, u64, u64, ptr, u64, ptr, u64, u32], returns: i32 },
  kiln_packed_supported: { args: [u32], returns: u32 },
  kiln_pack_rows: { args: [u32, ptr, u64, u64, ptr, u64, u32], returns: i32 },
  kiln_matmul_packed: { args: [u32, ptr, u64, u64, ptr, u64, ptr, u64], returns: i32 },

  kiln_rmsnorm: { args: [ptr, ptr, ptr, ptr, u64, u64, u64, f32, i32, ptr], returns: i32 },
  kiln_rmsnorm_heads: { args: [ptr, u64, u64, u64, u64, ptr, f32], returns: i32 },
  kiln_silu_mul: { args: [ptr, ptr, ptr, u64], returns: none },
  kiln_gelu_tanh_mul: { args: [ptr, ptr, ptr, u64], returns: none },
  kiln_add: { args: [ptr, ptr, u64], returns: none },
  kiln_mul: { args: [ptr, ptr, u64], returns: none },
  kiln_scale: { args: [ptr, u64, f32], returns: none },
  kiln_softmax: { args: [ptr, u64, u64, u64], returns: i32 },
  kiln_rope: { args: [ptr, u64, u64, u64, u64, u64, ptr, u64, u32, f32, f32, ptr], returns: i32 },

  kiln_flash_attention: {
    args: [ptr, u64, u64, ptr, ptr, u32, u64, u64, ptr, u64, u64, u64, u64, u64, u64, u64, u64, u64, f32, f32],
    returns: i32,
  },
  kiln_attention_naive: {
    args: [ptr, u64, u64, ptr, ptr, u32, u64, u64, ptr, u64, u64, u64, u64, u64, u64, u64, u64, u64, f32, f32, ptr],
    returns: i32,
  },

  kiln_mmap_readonly: { args: [ptr, ptr], returns: ptr },
  kiln_munmap: { args: [ptr, u64], returns: none },
  kiln_alloc: { args: [u64], returns: ptr },
  kiln_free: { args: [ptr, u64], returns: none },
  kiln_read_bandwidth: { args: [ptr, u64, u32], returns: f64 },
} as const;

/** The CPU levels kiln is built for, best first within an architecture. */
export type CpuLevel = "x86_64-v4" | "x86_64-v3" | "x86_64-baseline" | "aarch64";
export const CPU_LEVELS: readonly CpuLevel[] = ["x86_64-v4", "x86_64-v3", "x86_64-baseline", "aarch64"];
/** kiln_cpu_level() numbering. */
export const CPU_LEVEL_IDS: Record<CpuLevel, number> = { "x86_64-baseline": 0, "x86_64-v3": 1, "x86_64-v4": 2, aarch64: 3 };

/** Status codes returned by the kernels (see zig-kernels/exports.zig). */
export const Status = { ok: 0, badType: -1, badShape: -2, badArg: -3 } as const;

/** The kernels' limits, read from the library (kiln_limit) rather than copied by hand. */
export interface KernelLimits {
  /** Largest batch whose rows the kernels compute bit for bit as each row alone. */
  maxInvariantRows: number;
  /** Largest inner dimension k of a packed matmul. */
  packedMaxK: number;
  /** Largest head_dim the attention kernels take. */
  maxHeadDim: number;
}
/** kiln_limit() ids (zig-kernels/exports.zig Limit). */
export const LIMIT_IDS: Record<keyof KernelLimits, number> = { maxInvariantRows: 0, packedMaxK: 1, maxHeadDim: 2 };

function readLimits(s: KilnSymbols, path: string): Readonly<KernelLimits> {
  const out = {} as KernelLimits;
  for (const [name, id] of Object.entries(LIMIT_IDS) as [keyof KernelLimits, number][]) {
    const v = s.kiln_limit(id) as number;
    if (!(v > 0)) throw new Error(`kiln: ${path} reports no value for limit ${name} (kiln_limit(${id}) = ${v})`);
    out[name] = v;
  }
  return Object.freeze(out);
}

function cpuFlags(): Set<string> {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const line = info.split("\n").find((l) => /^(flags|Features)\s*:/.test(l)) ?? "";
    return new Set(line.split(":")[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

/** The best level this CPU runs, from /proc/cpuinfo. */
export function detectCpuLevel(): CpuLevel {
  const f = cpuFlags();
  if (process.arch === "arm64") {
    if (!f.has("asimddp")) throw new Error("kiln: this aarch64 CPU lacks the dotprod extension (ARMv8.2 sdot) kiln's NEON build needs");
    return "aarch64";
  }
  if (process.arch !== "x64") throw new Error(`kiln: unsupported CPU architecture ${process.arch}`);
  const v4 = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"];
  const v3 = ["avx2", "fma", "f16c", "bmi2", "movbe"];
  if ([...v4, ...v3].every((x) => f.has(x))) return "x86_64-v4";
  if (v3.every((x) => f.has(x))) return "x86_64-v3";
  return "x86_64-baseline";
}

export const libraryDir = join(import.meta.dir, "..", "..", "zig-out", "lib");

export function libraryPath(level: CpuLevel): string {
  return join(libraryDir, `libkiln-${level}.${suffix}`);
}

export type KilnSymbols = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

export interface LoadedLibrary {
  level: CpuLevel;
  path: string;
  symbols: KilnSymbols;
  limits: Readonly<KernelLimits>;
  close(): void;
}

/** Loads one level's build. KILN_CPU (a CpuLevel name) forces the level; tests use it. */
export function loadLibrary(level: CpuLevel = (process.env.KILN_CPU as CpuLevel) || detectCpuLevel()): LoadedLibrary {
  if (!CPU_LEVELS.includes(level)) {
    throw new Error(`kiln: KILN_CPU=${level} is not a CPU level; use one of ${CPU_LEVELS.join(", ")}`);
  }
  const path = libraryPath(level);
  if (!existsSync(path)) {
    throw new Error(`kiln: kernel library ${path} is missing; run \`bun run setup\` (or \`bun run build\`) first`);
  }
  const lib = dlopen(path, symbols);
  const abi = lib.symbols.kiln_abi_version();
  if (abi !== ABI_VERSION) {
    lib.close();
    throw new Error(`kiln: ${path} has ABI version ${abi}, this binding expects ${ABI_VERSION}; rebuild with \`bun run build\``);
  }
  let limits: Readonly<KernelLimits>;
  try {
    limits = readLimits(lib.symbols, path);
  } catch (e) {
    lib.close();
    throw e;
  }
  return { level, path, symbols: lib.symbols, limits, close: () => lib.close() };
}

let shared: LoadedLibrary | undefined;

/** The process-wide library, loaded on first use. */
export function kiln(): KilnSymbols {
  shared ??= loadLibrary();
  return shared.symbols;
}

/** The process-wide library's limits, read once when it loads. */
export function limits(): Readonly<KernelLimits> {
  shared ??= loadLibrary();
  return shared.limits;
}

export function loadedLevel(): CpuLevel {
  shared ??= loadLibrary();
  return shared.level;
}
