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
import { existsSync } from "node:fs";
import { join } from "node:path";

const { ptr, u32, u64, i32, i64_fast, f32, f64, void: none } = FFIType;

/** The environment, read once: KILN_CPU forces a CPU level. */
const env = Object.freeze({ cpu: process.env.KILN_CPU || undefined });

/** ABI version this binding was written for; must equal kiln_abi_version(). */
export const ABI_VERSION = 4;

export const symbols = {
  kiln_abi_version: { args: [], returns: u32 },
  kiln_cpu_level: { args: [], returns: u32 },
  kiln_cpu_best_level: { args: [], returns: u32 },
  kiln_cpu_features: { args: [], returns: u64 },
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

/** kiln_cpu_best_level() when no build of kiln runs on this CPU. */
const NO_CPU_LEVEL = 0xffffffff;
const LEVEL_BY_ID = new Map(Object.entries(CPU_LEVEL_IDS).map(([name, id]) => [id, name as CpuLevel]));

/**
 * kiln_cpu_features() bits (zig-kernels/cpu.zig Feature), named as Linux's /proc/cpuinfo names
 * them. Register-state features (AVX, AVX-512, AMX) count only when the OS enables that state.
 */
export const CPU_FEATURES = {
  sse4_2: 0, popcnt: 1, avx: 2, avx2: 3, fma: 4, f16c: 5, bmi1: 6, bmi2: 7, lzcnt: 8, movbe: 9,
  avx512f: 10, avx512bw: 11, avx512dq: 12, avx512vl: 13, avx512cd: 14, avx512_vnni: 15, avx512_bf16: 16, avx512_fp16: 17,
  avx_vnni: 18, amx_tile: 19, amx_int8: 20, amx_bf16: 21,
  asimd: 32, asimddp: 33, asimdhp: 34, i8mm: 35, bf16: 36, sve: 37,
} as const;
export type CpuFeature = keyof typeof CPU_FEATURES;

export function cpuFeatureNames(mask: bigint): CpuFeature[] {
  return (Object.keys(CPU_FEATURES) as CpuFeature[]).filter((f) => (mask >> BigInt(CPU_FEATURES[f])) & 1n);
}

export interface CpuInfo {
  /** The best level this CPU runs. */
  best: CpuLevel;
  features: readonly CpuFeature[];
}

/** The build every CPU of this architecture loads: the one asked what the CPU runs. */
function probeLevel(): CpuLevel {
  if (process.arch === "x64") return "x86_64-baseline";
  if (process.arch === "arm64") return "aarch64";
  throw new Error(`kiln: unsupported CPU architecture ${process.arch} (kiln is built for x64 and arm64)`);
}

let cpu: CpuInfo | undefined;

/**
 * What this CPU runs, asked once of the platform's baseline build (CPUID and XGETBV on x86,
 * HWCAP or sysctl on arm64; the detection code is compiled at the baseline in every build).
 */
export function cpuInfo(): CpuInfo {
  if (cpu) return cpu;
  const path = libraryPath(probeLevel());
  if (!existsSync(path)) throw new Error(`kiln: kernel library ${path} is missing; run \`bun run setup\` (or \`bun run build\`) first`);
  const lib = dlopen(path, { kiln_cpu_best_level: symbols.kiln_cpu_best_level, kiln_cpu_features: symbols.kiln_cpu_features });
  let id: number, mask: bigint;
  try {
    id = lib.symbols.kiln_cpu_best_level();
    mask = lib.symbols.kiln_cpu_features();
  } finally {
    lib.close();
  }
  const features = Object.freeze(cpuFeatureNames(mask));
  const best = LEVEL_BY_ID.get(id);
  if (!best) {
    const why = id === NO_CPU_LEVEL && process.arch === "arm64" ? "kiln's NEON build needs the dotprod and fp16 extensions (ARMv8.2)" : `kiln_cpu_best_level() = ${id}`;
    throw new Error(`kiln: this ${process.arch} CPU runs no kiln build: ${why}; it has ${features.join(" ") || "none of the features kiln asks about"}`);
  }
  return (cpu = Object.freeze({ best, features }));
}

/** The best level this CPU runs. */
export function detectCpuLevel(): CpuLevel {
  return cpuInfo().best;
}

const X86_ORDER: readonly CpuLevel[] = ["x86_64-baseline", "x86_64-v3", "x86_64-v4"];

/** Whether a CPU whose best level is `best` can run the `level` build. */
export function canRun(level: CpuLevel, best: CpuLevel): boolean {
  if (level === "aarch64" || best === "aarch64") return level === best;
  return X86_ORDER.indexOf(level) <= X86_ORDER.indexOf(best);
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

/**
 * Loads one level's build: by default KILN_CPU's level, else the best this CPU runs. A level the
 * CPU cannot run is refused here rather than left to die of an illegal instruction.
 */
export function loadLibrary(level: CpuLevel = (env.cpu as CpuLevel) ?? detectCpuLevel()): LoadedLibrary {
  if (!CPU_LEVELS.includes(level)) {
    throw new Error(`kiln: KILN_CPU=${level} is not a CPU level; use one of ${CPU_LEVELS.join(", ")}`);
  }
  const best = detectCpuLevel();
  if (!canRun(level, best)) {
    const forced = env.cpu === level ? ` (forced by KILN_CPU=${level}; unset it or pick a level this CPU runs)` : "";
    throw new Error(`kiln: this CPU cannot run the ${level} build${forced}: it runs ${best} at best, features: ${cpuInfo().features.join(" ")}`);
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
