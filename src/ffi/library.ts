/**
 * The one dlopen table of kiln: every symbol of libkiln with its C signature, where the library
 * comes from, and which CPU-level build to load.
 *
 * Where (decided once, first match wins):
 *   1. KILN_LIBRARY: a folder of libkiln-<level>.<ext> files, or one such file (then its level
 *      is the one it reports);
 *   2. the dev build zig-out/lib beside these sources (`bun run build` in a checkout);
 *   3. the platform package @kiln/<platform> (`${process.platform}-${process.arch}`), an
 *      optional dependency of kiln, holding lib/libkiln-<level>.<ext>.
 * Which level: KILN_CPU when set, else the best this CPU runs, asked of the platform's baseline
 * build (kiln_cpu_best_level). Environment variables are read once, when this module loads.
 *
 * Rules this file keeps (Bun FFI pitfalls):
 * - typed arrays are passed directly as `ptr` arguments, never through a cached `ptr()` number:
 *   small typed arrays live inside their JS object and can move between calls;
 * - structs never cross by value: only pointers, lengths and strides;
 * - 64-bit returns are read with the `_fast` types, which give a number when it fits.
 */
import { KilnError } from "../errors";
import { dlopen, FFIType, suffix, type FFIFunction } from "bun:ffi";
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const { ptr, u32, u64, i32, i64_fast, f32, f64, void: none } = FFIType;

/** The environment, read once: KILN_CPU forces a CPU level, KILN_LIBRARY says where the library is. */
const env = Object.freeze({ cpu: process.env.KILN_CPU || undefined, library: process.env.KILN_LIBRARY || undefined, prefetch: process.env.KILN_PREFETCH || undefined, packLayers: process.env.KILN_PACK_LAYERS || undefined });

/** ABI version this binding was written for; must equal kiln_abi_version(). */
export const ABI_VERSION = 15;

export const symbols = {
  kiln_abi_version: { args: [], returns: u32 },
  kiln_cpu_level: { args: [], returns: u32 },
  kiln_cpu_best_level: { args: [], returns: u32 },
  kiln_cpu_features: { args: [], returns: u64 },
  kiln_amx_status: { args: [], returns: i32 },
  kiln_amx_bf16_status: { args: [], returns: i32 },
  kiln_bf16_status: { args: [], returns: i32 },
  kiln_prefetch_policy: { args: [], returns: i32 },
  kiln_pack_layers_default: { args: [], returns: u32 },
  kiln_limit: { args: [u32], returns: i64_fast },
  kiln_set_threads: { args: [u32], returns: u32 },
  kiln_get_threads: { args: [], returns: u32 },

  kiln_type_block_size: { args: [u32], returns: i64_fast },
  kiln_type_size: { args: [u32], returns: i64_fast },
  kiln_act_row_bytes: { args: [u32, u64], returns: i64_fast },
  kiln_dequantize_row: { args: [u32, ptr, ptr, u64], returns: i32 },
  kiln_quantize_row: { args: [u32, ptr, ptr, u64], returns: i32 },
  kiln_store_kv: { args: [u32, ptr, u64, u64, u64, ptr, u64, u64], returns: i32 },
  kiln_get_rows: { args: [u32, ptr, u64, ptr, u64, ptr], returns: i32 },
  kiln_quantize_act: { args: [u32, ptr, u64, u64, u64, ptr], returns: i32 },

  kiln_matmul: { args: [u32, ptr, u64, u64, ptr, u64, ptr, u64], returns: i32 },
  kiln_matmul3: { args: [u32, u64, ptr, u64, ptr, u64, ptr, ptr, u64, ptr, ptr, u64, ptr], returns: i32 },
  kiln_ffn_gated: { args: [u32, ptr, ptr, u64, u64, ptr, u64, ptr, u64, u32], returns: i32 },
  kiln_packed_supported: { args: [u32], returns: u32 },
  kiln_pack_rows: { args: [u32, ptr, u64, u64, ptr, u64, u32], returns: i32 },
  kiln_matmul_packed: { args: [u32, ptr, u64, u64, ptr, u64, ptr, u64], returns: i32 },
  kiln_matmul3_packed: { args: [u64, ptr, u64, u32, ptr, u64, ptr, u32, ptr, u64, ptr, u32, ptr, u64, ptr], returns: i32 },
  kiln_ffn_gated_packed: { args: [u32, ptr, ptr, u64, u64, ptr, u64, ptr, u64, u32], returns: i32 },

  kiln_rmsnorm: { args: [ptr, ptr, ptr, ptr, u64, u64, u64, f32, i32, ptr], returns: i32 },
  kiln_rmsnorm_heads: { args: [ptr, u64, u64, u64, u64, ptr, f32], returns: i32 },
  kiln_silu_mul: { args: [ptr, ptr, ptr, u64], returns: none },
  kiln_gelu_tanh_mul: { args: [ptr, ptr, ptr, u64], returns: none },
  kiln_add: { args: [ptr, ptr, u64], returns: none },
  kiln_mul: { args: [ptr, ptr, u64], returns: none },
  kiln_scale: { args: [ptr, u64, f32], returns: none },
  kiln_softmax: { args: [ptr, u64, u64, u64], returns: i32 },
  kiln_argmax_f32: { args: [ptr, u64], returns: i64_fast },
  kiln_top_k_f32: { args: [ptr, u64, u64, ptr, ptr], returns: i64_fast },
  kiln_rope: { args: [ptr, u64, u64, u64, u64, u64, ptr, u64, u32, f32, f32, ptr], returns: i32 },
  kiln_rope_table: { args: [ptr, u64, u64, u32, f32, f32, ptr, ptr, u64], returns: i32 },
  kiln_rope_apply: { args: [ptr, u64, u64, u64, u64, u64, u64, u32, ptr, u64], returns: i32 },

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

  // CUDA (zig-kernels/cuda_loader.zig): NVRTC and the driver, opened at run time; wrapped by
  // src/backends/cuda/driver.ts and compile.ts. Handles and device pointers are u64; statuses
  // are Status values, with the failing call's name and CUDA error in kiln_cuda_last_error.
  kiln_cuda_last_error: { args: [ptr, u64], returns: u64 },
  kiln_nvrtc_load: { args: [ptr], returns: i32 },
  kiln_nvrtc_version: { args: [ptr, ptr], returns: i32 },
  kiln_nvrtc_compile: { args: [ptr, u64, ptr, ptr, u64, u32, ptr, u64, u32, ptr], returns: i32 },
  kiln_nvrtc_log: { args: [u64, ptr, u64], returns: i64_fast },
  kiln_nvrtc_cubin: { args: [u64, ptr, u64], returns: i64_fast },
  kiln_nvrtc_free: { args: [u64], returns: i32 },
  kiln_cuda_load: { args: [ptr], returns: i32 },
  kiln_cuda_driver_version: { args: [ptr], returns: i32 },
  kiln_cuda_device_count: { args: [ptr], returns: i32 },
  kiln_cuda_device_info: { args: [i32, ptr, ptr, ptr, ptr, u32], returns: i32 },
  kiln_cuda_context_retain: { args: [i32, ptr], returns: i32 },
  kiln_cuda_context_set_current: { args: [u64], returns: i32 },
  kiln_cuda_context_release: { args: [i32], returns: i32 },
  kiln_cuda_context_synchronize: { args: [], returns: i32 },
  kiln_cuda_mem_info: { args: [ptr, ptr], returns: i32 },
  kiln_cuda_module_load: { args: [ptr, u64, ptr], returns: i32 },
  kiln_cuda_module_function: { args: [u64, ptr, ptr], returns: i32 },
  kiln_cuda_module_unload: { args: [u64], returns: i32 },
  kiln_cuda_launch: { args: [u64, u32, u32, u32, u32, u32, u32, u32, u64, ptr], returns: i32 },
  kiln_cuda_malloc: { args: [u64, ptr], returns: i32 },
  kiln_cuda_free: { args: [u64], returns: i32 },
  kiln_cuda_memcpy_htod: { args: [u64, ptr, u64, u64], returns: i32 },
  kiln_cuda_memcpy_dtoh: { args: [ptr, u64, u64, u64], returns: i32 },
  kiln_cuda_memcpy_dtod: { args: [u64, u64, u64, u64], returns: i32 },
  kiln_cuda_memset: { args: [u64, u32, u64, u64], returns: i32 },
  kiln_cuda_host_alloc: { args: [u64, ptr], returns: i32 },
  kiln_cuda_host_free: { args: [u64], returns: i32 },
  kiln_cuda_stream_create: { args: [ptr], returns: i32 },
  kiln_cuda_stream_destroy: { args: [u64], returns: i32 },
  kiln_cuda_stream_synchronize: { args: [u64], returns: i32 },
  kiln_cuda_graph_begin: { args: [u64], returns: i32 },
  kiln_cuda_graph_end: { args: [u64, ptr], returns: i32 },
  kiln_cuda_graph_launch: { args: [u64, u64], returns: i32 },
  kiln_cuda_graph_destroy: { args: [u64], returns: i32 },
} as const;

/** The CPU levels kiln is built for, best first within an architecture. */
export type CpuLevel = "x86_64-v4" | "x86_64-v3" | "x86_64-baseline" | "aarch64";
export const CPU_LEVELS: readonly CpuLevel[] = ["x86_64-v4", "x86_64-v3", "x86_64-baseline", "aarch64"];
/** kiln_cpu_level() numbering. */
export const CPU_LEVEL_IDS: Record<CpuLevel, number> = { "x86_64-baseline": 0, "x86_64-v3": 1, "x86_64-v4": 2, aarch64: 3 };

/**
 * Status codes returned by the kernels (see zig-kernels/exports.zig); the CUDA ones
 * (zig-kernels/cuda_loader.zig) come with a message from kiln_cuda_last_error.
 */
export const Status = { ok: 0, badType: -1, badShape: -2, badArg: -3, cudaFailed: -4, noLibrary: -5, compileFailed: -6 } as const;

/** The kernels' limits, read from the library (kiln_limit) rather than copied by hand. */
export interface KernelLimits {
  /** Largest batch whose rows the kernels compute bit for bit as each row alone. */
  maxInvariantRows: number;
  /** Largest inner dimension k of a packed matmul. */
  packedMaxK: number;
  /** Largest head_dim the attention kernels take. */
  maxHeadDim: number;
  /** Largest n_rot the rope kernels take. */
  ropeMaxRot: number;
  /** Floats per rotated dimension in a row of a rope table (kiln_rope_table). */
  ropeTableFloatsPerRot: number;
}
/** kiln_limit() ids (zig-kernels/exports.zig Limit). */
export const LIMIT_IDS: Record<keyof KernelLimits, number> = { maxInvariantRows: 0, packedMaxK: 1, maxHeadDim: 2, ropeMaxRot: 3, ropeTableFloatsPerRot: 4 };

function readLimits(s: KilnSymbols, path: string): Readonly<KernelLimits> {
  const out = {} as KernelLimits;
  for (const [name, id] of Object.entries(LIMIT_IDS) as [keyof KernelLimits, number][]) {
    const v = s.kiln_limit(id) as number;
    if (!(v > 0)) throw new KilnError("LIBRARY", `kiln: ${path} reports no value for limit ${name} (kiln_limit(${id}) = ${v})`);
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

/** What this CPU runs, as the kernel library detects it (cpuInfo()). */
export interface CpuInfo {
  /** The best level this CPU runs. */
  best: CpuLevel;
  /** The features seen, named as /proc/cpuinfo names them (register-state features only when the OS enables them). */
  features: readonly CpuFeature[];
}

/** This machine in Node's naming; the kernels ship as the npm package `@kiln/<PLATFORM>`. */
export const PLATFORM = `${process.platform}-${process.arch}`;

/** The dev build beside the sources (`bun run build` in a checkout). */
export const devLibraryDir = join(import.meta.dir, "..", "..", "zig-out", "lib");

export const libraryFileName = (level: CpuLevel): string => `libkiln-${level}.${suffix}`;

/** Where the kernel library came from: KILN_LIBRARY, the dev build, or the platform package. */
export type LibrarySource = "env" | "dev" | "package";

/** A folder of libkiln-<level> files, or (KILN_LIBRARY naming a file) one library. */
type Location = { source: LibrarySource; dir: string; file?: undefined } | { source: "env"; file: string; dir?: undefined };

/** This architecture's levels, the baseline (which every CPU of it runs) first. */
function archLevels(): CpuLevel[] {
  if (process.arch === "x64") return ["x86_64-baseline", "x86_64-v3", "x86_64-v4"];
  if (process.arch === "arm64") return ["aarch64"];
  throw new KilnError("LIBRARY", `kiln: unsupported CPU architecture ${process.arch} (kiln is built for x64 and arm64)`);
}

/** The folder of an installed package, or null when it does not resolve from here. */
function packageDir(name: string): string | null {
  try {
    const url = import.meta.resolve(`${name}/package.json`);
    return dirname(url.startsWith("file:") ? fileURLToPath(url) : url);
  } catch {
    return null;
  }
}

let location: Location | undefined;

function locate(): Location {
  if (location) return location;
  if (env.library) {
    const p = resolve(env.library);
    if (!existsSync(p)) throw new KilnError("LIBRARY", `kiln: KILN_LIBRARY=${env.library} does not exist; it must name a folder of libkiln-<level>.${suffix} files or one such file`);
    return (location = statSync(p).isDirectory() ? { source: "env", dir: p } : { source: "env", file: p });
  }
  const probe = libraryFileName(archLevels()[0]!);
  if (existsSync(join(devLibraryDir, probe))) return (location = { source: "dev", dir: devLibraryDir });
  const tried = [`KILN_LIBRARY (not set)`, `the dev build ${join(devLibraryDir, probe)} (missing)`];
  const pkg = `@kiln/${PLATFORM}`;
  const installed = packageDir(pkg);
  if (installed && existsSync(join(installed, "lib", probe))) return (location = { source: "package", dir: join(installed, "lib") });
  tried.push(installed ? `${join(installed, "lib", probe)} (missing from the installed ${pkg})` : `the package ${pkg} (not installed)`);
  throw new KilnError("LIBRARY", 
    `kiln: no kernel library for ${PLATFORM}. Tried: ${tried.join("; ")}. ` +
      `Install it with \`bun add ${pkg}\` (kiln lists it as an optional dependency; it may have been skipped), ` +
      `run \`bun run build\` in a kiln checkout, or point KILN_LIBRARY at a folder of libkiln-<level>.${suffix} files.`,
  );
}

/** Opens `path` with `table` after checking its ABI version, with errors that name the file. */
function open<T extends Record<string, FFIFunction>>(path: string, table: T, source: LibrarySource) {
  const opened = <U extends Record<string, FFIFunction>>(t: U) => {
    try {
      return dlopen(path, t);
    } catch (e) {
      throw new KilnError("LIBRARY", `kiln: cannot load ${path} (${source === "env" ? "KILN_LIBRARY" : source === "dev" ? "dev build" : `@kiln/${PLATFORM}`}): ${(e as Error).message}`);
    }
  };
  const version = opened({ kiln_abi_version: symbols.kiln_abi_version });
  const abi = version.symbols.kiln_abi_version() as number;
  version.close();
  if (abi !== ABI_VERSION) {
    const fix = source === "package" ? `install the @kiln/${PLATFORM} version that matches kiln's` : source === "dev" ? "rebuild with `bun run build`" : "point KILN_LIBRARY at a matching build";
    throw new KilnError("LIBRARY", `kiln: ${path} has ABI version ${abi}, this binding expects ${ABI_VERSION}; ${fix}`);
  }
  return dlopen(path, table);
}

let cpu: CpuInfo | undefined;
/** KILN_LIBRARY naming one file: the level that file reports. */
let fileLevel: CpuLevel | undefined;

/**
 * What this CPU runs, asked once of the platform's baseline build (CPUID and XGETBV on x86,
 * HWCAP or sysctl on arm64; the detection code is compiled at the baseline in every build, so
 * a KILN_LIBRARY file of any level is asked directly).
 */
export function cpuInfo(): CpuInfo {
  if (cpu) return cpu;
  const where = locate();
  const path = where.file ?? archLevels().map((l) => join(where.dir!, libraryFileName(l))).find(existsSync);
  if (!path) throw new KilnError("LIBRARY", `kiln: ${where.dir} holds no libkiln-<level>.${suffix} for ${process.arch} (${archLevels().map(libraryFileName).join(", ")})`);
  const lib = open(path, { kiln_cpu_level: symbols.kiln_cpu_level, kiln_cpu_best_level: symbols.kiln_cpu_best_level, kiln_cpu_features: symbols.kiln_cpu_features }, where.source);
  let id: number, mask: bigint, own: number;
  try {
    id = lib.symbols.kiln_cpu_best_level();
    mask = lib.symbols.kiln_cpu_features();
    own = lib.symbols.kiln_cpu_level();
  } finally {
    lib.close();
  }
  const features = Object.freeze(cpuFeatureNames(mask));
  const best = LEVEL_BY_ID.get(id);
  if (!best) {
    const why = id === NO_CPU_LEVEL && process.arch === "arm64" ? "kiln's NEON build needs the dotprod and fp16 extensions (ARMv8.2)" : `kiln_cpu_best_level() = ${id}`;
    throw new KilnError("LIBRARY", `kiln: this ${process.arch} CPU runs no kiln build: ${why}; it has ${features.join(" ") || "none of the features kiln asks about"}`);
  }
  if (where.file) fileLevel = LEVEL_BY_ID.get(own);
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

/** The file of one level's build, where the library is found. */
export function libraryPath(level: CpuLevel): string {
  const where = locate();
  if (where.dir) return join(where.dir, libraryFileName(level));
  cpuInfo();
  if (level !== fileLevel) throw new KilnError("LIBRARY", `kiln: KILN_LIBRARY=${where.file} is the ${fileLevel} build; there is no ${level} build beside it to load`);
  return where.file!;
}

export type KilnSymbols = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

export interface LoadedLibrary {
  level: CpuLevel;
  path: string;
  source: LibrarySource;
  symbols: KilnSymbols;
  limits: Readonly<KernelLimits>;
  close(): void;
}

/** The level loaded when none is named: KILN_CPU's, KILN_LIBRARY's file's, else the best the CPU runs that is there. */
function defaultLevel(): CpuLevel {
  const best = detectCpuLevel();
  if (env.cpu) return env.cpu as CpuLevel;
  if (fileLevel) return fileLevel;
  const dir = locate().dir!;
  return [...archLevels()].reverse().find((l) => canRun(l, best) && existsSync(join(dir, libraryFileName(l)))) ?? best;
}

/**
 * Loads one level's build (default: KILN_CPU's level, else the best this CPU runs). A level the
 * CPU cannot run is refused here rather than left to die of an illegal instruction.
 */
export function loadLibrary(level: CpuLevel = defaultLevel()): LoadedLibrary {
  if (!CPU_LEVELS.includes(level)) {
    throw new KilnError("LIBRARY", `kiln: KILN_CPU=${level} is not a CPU level; use one of ${CPU_LEVELS.join(", ")}`);
  }
  checkPrefetchEnv();
  checkPackLayersEnv();
  const best = detectCpuLevel();
  if (!canRun(level, best)) {
    const forced = env.cpu === level ? ` (forced by KILN_CPU=${level}; unset it or pick a level this CPU runs)` : "";
    throw new KilnError("LIBRARY", `kiln: this CPU cannot run the ${level} build${forced}: it runs ${best} at best, features: ${cpuInfo().features.join(" ")}`);
  }
  const source = locate().source;
  const path = libraryPath(level);
  if (!existsSync(path)) {
    const fix = source === "dev" ? "run `bun run build`" : source === "package" ? `reinstall @kiln/${PLATFORM}` : "add it to KILN_LIBRARY's folder";
    throw new KilnError("LIBRARY", `kiln: kernel library ${path} is missing; ${fix}`);
  }
  const lib = open(path, symbols, source);
  let limits: Readonly<KernelLimits>;
  try {
    limits = readLimits(lib.symbols, path);
  } catch (e) {
    lib.close();
    throw e;
  }
  return { level, path, source, symbols: lib.symbols, limits, close: () => lib.close() };
}

let shared: LoadedLibrary | undefined;

function sharedLibrary(): LoadedLibrary {
  return (shared ??= loadLibrary());
}

/** The process-wide library, loaded on first use. */
export function kiln(): KilnSymbols {
  return sharedLibrary().symbols;
}

/** The process-wide library's limits, read once when it loads. */
export function limits(): Readonly<KernelLimits> {
  return sharedLibrary().limits;
}

export function loadedLevel(): CpuLevel {
  return sharedLibrary().level;
}

/** A run-time path's status code (kiln_amx_status, kiln_amx_bf16_status, kiln_bf16_status) as its name in `names`. */
function namedStatus<N extends string>(fn: "kiln_amx_status" | "kiln_amx_bf16_status" | "kiln_bf16_status", names: readonly N[]): { enabled: boolean; reason: N } {
  const code = kiln()[fn]() as number;
  const reason = names[code];
  if (reason === undefined) throw new KilnError("LIBRARY", `kiln: ${fn}() = ${code}, not a known status`);
  return { enabled: reason === "enabled", reason };
}

/** Every answer amxStatus() can give, in the order of kiln_amx_status()'s codes (zig-kernels/amx.zig Status). */
export const AMX_STATUS = ["enabled", "disabled_by_env", "not_built", "no_cpu_support", "no_os_support", "permission_denied", "self_check_failed"] as const;
/** Why the AMX prefill kernel is or is not in use ("enabled", "no_cpu_support", …; docs/tuning.md). */
export type AmxStatus = (typeof AMX_STATUS)[number];

/**
 * Whether the process-wide library's prefill matmuls (quantized weights, batches above 16 rows)
 * run on Intel AMX, and if not why: `disabled_by_env` (KILN_AMX=0), `not_built` (only the
 * x86_64-v4 Linux build has AMX), `no_cpu_support`, `no_os_support` (the OS does not enable tile
 * state), `permission_denied` (Linux's arch_prctl refused), `self_check_failed` (the hardware
 * kernel disagreed with its emulation on a fixed problem). Decided once per process.
 */
export function amxStatus(): {
  /** Whether batched matmuls of quantized weights use AMX tiles in this process. */
  enabled: boolean;
  /** "enabled", or why not. */
  reason: AmxStatus;
} {
  return namedStatus("kiln_amx_status", AMX_STATUS);
}

/**
 * Whether the process-wide library's prefill matmuls of BF16 weights (batches above 16 rows) run
 * on Intel AMX-BF16 tiles (`tdpbf16ps`, ahead of the AVX512-BF16 path of bf16Status(), which
 * must be enabled too), as does prefill attention over an f16 KV cache
 * (zig-kernels/attention_amx.zig), and if not why: amxStatus()'s reasons, then `no_cpu_support` where the
 * CPU lacks AMX-BF16 and `self_check_failed` where the hardware left the f32 summation error
 * bound on a fixed problem (its order of additions is its own; docs/tuning.md). KILN_AMX=0 turns
 * it off with the int8 kernel. Decided once per process.
 */
export function amxBf16Status(): {
  /** Whether BF16 prefill uses AMX tiles in this process. */
  enabled: boolean;
  /** "enabled", or why not. */
  reason: AmxStatus;
} {
  return namedStatus("kiln_amx_bf16_status", AMX_STATUS);
}

/** Every answer bf16Status() can give, in the order of kiln_bf16_status()'s codes (zig-kernels/bf16.zig Status). */
export const BF16_STATUS = ["enabled", "disabled_by_env", "not_built", "no_cpu_support", "self_check_failed"] as const;
/** Why the AVX512-BF16 prefill kernel for BF16 weights is or is not in use (docs/tuning.md). */
export type Bf16Status = (typeof BF16_STATUS)[number];

/**
 * Whether the process-wide library's prefill matmuls of BF16 weights (batches above 16 rows)
 * run on AVX512-BF16 (`vdpbf16ps`, the activations rounded to bf16 as llama.cpp does for BF16
 * weights; about twice the f32 rate), and if not why: `disabled_by_env` (KILN_BF16=0),
 * `not_built` (only the x86_64-v4 build has it), `no_cpu_support`, `self_check_failed` (the
 * instructions disagreed with their emulation on a fixed problem). Decided once per process.
 */
export function bf16Status(): {
  /** Whether BF16 prefill uses vdpbf16ps in this process. */
  enabled: boolean;
  /** "enabled", or why not. */
  reason: Bf16Status;
} {
  return namedStatus("kiln_bf16_status", BF16_STATUS);
}

/** Every prefetch policy, in the order of kiln_prefetch_policy()'s codes (zig-kernels/cpu.zig PrefetchPolicy). */
export const PREFETCH_POLICIES = ["by_level", "non_temporal", "l2"] as const;
/** Added to kiln_prefetch_policy()'s code when KILN_PREFETCH chose the policy (zig-kernels/cpu.zig prefetch_from_env). */
const PREFETCH_FROM_ENV = 0x100;
/** The cache hint of the decode kernels' software prefetches (docs/tuning.md). */
export type PrefetchPolicy = (typeof PREFETCH_POLICIES)[number];

/**
 * Which cache hint the process-wide library's decode kernels prefetch the next rows with, and
 * who chose it: `non_temporal` (prefetchnta into L1 for every kernel; the CPU's choice on AMD
 * Zen 5 and later), `l2` (prefetcht1 into L2 for every kernel; Intel) or `by_level` (prefetcht0
 * / prefetcht1 by kernel; every other CPU), from `cpu` or from
 * KILN_PREFETCH=by_level|non_temporal|l2 (`env`). Results are the same bits under each
 * policy; only the speed differs. Decided once per process.
 */
export function prefetchPolicy(): {
  /** The hint in use. */
  policy: PrefetchPolicy;
  /** "cpu": measured best for this CPU; "env": KILN_PREFETCH. */
  source: "cpu" | "env";
} {
  const code = kiln().kiln_prefetch_policy() as number;
  const fromEnv = code >= PREFETCH_FROM_ENV;
  const policy = PREFETCH_POLICIES[fromEnv ? code - PREFETCH_FROM_ENV : code];
  if (policy === undefined || code < 0) throw new KilnError("LIBRARY", `kiln: kiln_prefetch_policy() = ${code}, not a known policy`);
  return { policy, source: fromEnv ? "env" : "cpu" };
}

/**
 * Whether loading copies the layers' matmul weights (the types zig-kernels/packed.zig has a layout
 * for in the loaded library) into the packed 16-row layout
 * when LoadOptions.packLayers is not given, and who chose: KILN_PACK_LAYERS=0|1 (`env`), else
 * the CPU's measured choice (`cpu`: Intel and AMD family 0x19 — Zen 3 and Zen 4 — yes, others no,
 * and no where the loaded library has no packed layouts; zig-kernels/cpu.zig packLayersFor).
 */
export function packLayersDefault(): {
  /** Whether loading packs the layers' weights when LoadOptions.packLayers is not given. */
  pack: boolean;
  /** "cpu": measured best for this CPU; "env": KILN_PACK_LAYERS. */
  source: "cpu" | "env";
} {
  if (env.packLayers !== undefined) return { pack: env.packLayers === "1", source: "env" };
  return { pack: kiln().kiln_pack_layers_default() === 1, source: "cpu" };
}

/** KILN_PACK_LAYERS, when set, is 0 or 1. */
function checkPackLayersEnv(): void {
  if (env.packLayers !== undefined && env.packLayers !== "0" && env.packLayers !== "1") {
    throw new KilnError("LIBRARY", `kiln: KILN_PACK_LAYERS=${env.packLayers} must be 0 or 1, or unset`);
  }
}

/** KILN_PREFETCH, when set, names a policy (the library ignores another value; the binding refuses it at load). */
function checkPrefetchEnv(): void {
  if (env.prefetch !== undefined && !(PREFETCH_POLICIES as readonly string[]).includes(env.prefetch)) {
    throw new KilnError("LIBRARY", `kiln: KILN_PREFETCH=${env.prefetch} is not a prefetch policy; use one of ${PREFETCH_POLICIES.join(", ")}, or unset it`);
  }
}

/** Which file the process-wide library is, its level, and where it was found. */
export function loadedLibrary(): {
  /** The library file. */
  path: string;
  /** Its CPU level. */
  level: CpuLevel;
  /** Where it was found: "env" (KILN_LIBRARY), "dev" (zig-out/lib of a checkout) or "package" (@kiln/<platform>). */
  source: LibrarySource;
} {
  const { path, level, source } = sharedLibrary();
  return { path, level, source };
}
