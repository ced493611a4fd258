/**
 * Kernel sources to device code: NVRTC compiles one cuda/*.cu file for one GPU architecture,
 * with every cuda/*.cuh handed over by name (no CUDA headers are needed), and the CUBIN is kept
 * in an on-disk cache so a process pays for NVRTC once per (source, headers, NVRTC, options,
 * architecture, driver).
 *
 * Where NVRTC comes from (first match): KILN_NVRTC (a path to libnvrtc.so.*), the project's
 * .tools/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 (scripts/setup.sh installs the pinned wheel),
 * then the system's libnvrtc.so.12. Compiling needs no GPU.
 *
 * The cache: KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln/cuda, else ~/.cache/kiln/cuda. One file
 * per key, written to a temporary name and renamed into place; each starts with a header (magic,
 * payload length, sha256 of the payload) that is checked on every read, so a truncated or
 * corrupt file is compiled again and overwritten, never handed to the driver.
 */
import { KilnError } from "../../errors";
import { kiln, Status } from "../../ffi/library";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, join } from "node:path";

/** The kernel sources beside kiln's src/: cuda/*.cu and cuda/*.cuh. */
export const CUDA_DIR = join(import.meta.dir, "..", "..", "..", "cuda");
/** The NVRTC scripts/setup.sh installs (PyPI wheel nvidia-cuda-nvrtc-cu12). */
export const PROJECT_NVRTC = join(import.meta.dir, "..", "..", "..", ".tools", "nvrtc", "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.12");

const enc = new TextEncoder();
const dec = new TextDecoder();
const cstr = (s: string): Buffer => Buffer.from(s + "\0", "utf8");

/** This thread's last CUDA/NVRTC error from libkiln ("nvrtcCompileProgram: NVRTC_ERROR_COMPILATION"). */
export function lastCudaError(): string {
  const buf = new Uint8Array(640);
  const n = Number(kiln().kiln_cuda_last_error(buf, buf.byteLength));
  return dec.decode(buf.subarray(0, Math.min(n, buf.byteLength)));
}

// ---- NVRTC -------------------------------------------------------------------------------------

export interface NvrtcInfo {
  /** The file loaded, or "system" when the dynamic loader found it by name. */
  path: string;
  version: readonly [number, number];
}

let nvrtc: NvrtcInfo | undefined;

/** Loads NVRTC once (KILN_NVRTC, else .tools/nvrtc, else the system's); throws KilnError CUDA when there is none. */
export function loadNvrtc(): NvrtcInfo {
  if (nvrtc) return nvrtc;
  const s = kiln();
  const fromEnv = process.env.KILN_NVRTC || undefined;
  const path = fromEnv ?? (existsSync(PROJECT_NVRTC) ? PROJECT_NVRTC : undefined);
  const status = s.kiln_nvrtc_load(path ? cstr(path) : null);
  if (status !== Status.ok) {
    const where = fromEnv ? `KILN_NVRTC=${fromEnv}` : `${PROJECT_NVRTC} (missing) and the system`;
    throw new KilnError("CUDA", `NVRTC cannot be loaded from ${where}: ${lastCudaError()}. Run scripts/setup.sh (it installs NVRTC into .tools/nvrtc) or set KILN_NVRTC to a libnvrtc.so.12`);
  }
  const v = new Int32Array(2);
  if (s.kiln_nvrtc_version(v.subarray(0, 1), v.subarray(1, 2)) !== Status.ok) throw new KilnError("CUDA", `NVRTC: ${lastCudaError()}`);
  return (nvrtc = Object.freeze({ path: path ?? "system", version: Object.freeze([v[0]!, v[1]!] as const) }));
}

// ---- sources ---------------------------------------------------------------------------------

/** A named header NVRTC resolves `#include "name"` to. */
export interface Header {
  name: string;
  source: string;
}

/** Every *.cuh of a kernel directory, by name, in name order. */
export function readHeaders(cudaDir = CUDA_DIR): Header[] {
  return readdirSync(cudaDir)
    .filter((f) => f.endsWith(".cuh"))
    .sort()
    .map((name) => ({ name, source: readFileSync(join(cudaDir, name), "utf8") }));
}

const KERNEL_RE = /\bKILN_KERNEL(?:_BOUNDS)?\(\s*(kiln_\w+)\s*,/g;

/** The kernel names a source declares with KILN_KERNEL(kiln_name, ...) / KILN_KERNEL_BOUNDS(kiln_name, ...). */
export function kernelNames(source: string): string[] {
  const noComments = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  return [...noComments.matchAll(KERNEL_RE)].map((m) => m[1]!).filter((n, i, all) => all.indexOf(n) === i);
}

const kernelMaps = new Map<string, Map<string, string>>();

/**
 * kernel name → the .cu file (a name in cudaDir) declaring it, scanned once per directory.
 * A name declared in two files is an error: kernel names are unique across cuda/.
 */
export function kernelFiles(cudaDir = CUDA_DIR): ReadonlyMap<string, string> {
  const cached = kernelMaps.get(cudaDir);
  if (cached) return cached;
  const map = new Map<string, string>();
  for (const file of readdirSync(cudaDir).filter((f) => f.endsWith(".cu")).sort()) {
    for (const name of kernelNames(readFileSync(join(cudaDir, file), "utf8"))) {
      const prev = map.get(name);
      if (prev) throw new KilnError("CUDA", `kernel ${name} is declared in both ${prev} and ${file}; kernel names must be unique across ${cudaDir}`);
      map.set(name, file);
    }
  }
  kernelMaps.set(cudaDir, map);
  return map;
}

// ---- compile -----------------------------------------------------------------------------------

export interface CompileOptions {
  /** Directory of the kernel sources and headers (default: kiln's cuda/). */
  cudaDir?: string;
  /** Cache directory (default: KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln/cuda, ~/.cache/kiln/cuda); null: no cache. */
  cacheDir?: string | null;
  /** Driver version the CUBIN is for (part of the cache key; CudaRuntime passes its own). Default 0. */
  driverVersion?: number;
  /** Adds -lineinfo (source lines for profilers); also KILN_CUDA_LINEINFO=1. */
  lineInfo?: boolean;
  /** More NVRTC options, appended. */
  extraOptions?: readonly string[];
}

/** A target: 90 or "90a" → sm_90 / sm_90a (CUBIN); "compute_90" → PTX the driver compiles. */
export type Arch = number | string;

function archOption(arch: Arch): string {
  const a = String(arch);
  if (!/^(compute_|sm_)?\d{2,3}[af]?$/.test(a)) throw new KilnError("BAD_OPTION", `CUDA architecture ${a}: expected e.g. 90, "90a", "sm_90" or "compute_90"`);
  return /^(compute_|sm_)/.test(a) ? a : `sm_${a}`;
}

/** The NVRTC options kiln compiles with. Exact math: no --use_fast_math. */
export function nvrtcOptions(arch: Arch, opts: CompileOptions = {}): string[] {
  const o = [`--gpu-architecture=${archOption(arch)}`, "-default-device", "-std=c++17"];
  if (opts.lineInfo ?? process.env.KILN_CUDA_LINEINFO === "1") o.push("-lineinfo");
  return [...o, ...(opts.extraOptions ?? [])];
}

/** What a cached CUBIN depends on. */
export interface CacheKeyParts {
  source: string;
  headers: readonly Header[];
  nvrtcVersion: readonly [number, number];
  options: readonly string[];
  arch: Arch;
  driverVersion: number;
}

/** The cache key: sha256 over every part, each length-prefixed so no two inputs collide by concatenation. */
export function cubinCacheKey(p: CacheKeyParts): string {
  const h = createHash("sha256");
  const field = (s: string) => {
    const b = enc.encode(s);
    h.update(`${b.byteLength}:`);
    h.update(b);
  };
  field("kiln-cubin-1");
  field(p.source);
  field(String(p.headers.length));
  for (const hd of p.headers) {
    field(hd.name);
    field(hd.source);
  }
  field(`${p.nvrtcVersion[0]}.${p.nvrtcVersion[1]}`);
  field(p.options.join("\0"));
  return `${archOption(p.arch)}-d${p.driverVersion}-${h.digest("hex")}`;
}

/** The cache directory in effect (not created). */
export function cacheDir(): string {
  if (process.env.KILN_CACHE_DIR) return process.env.KILN_CACHE_DIR;
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith("/") ? xdg : join(homedir(), ".cache"), "kiln", "cuda");
}

/** How often NVRTC ran and the cache answered, since the process started (tests read it). */
export const compileCounters = { nvrtc: 0, cacheHits: 0, cacheRejected: 0 };

// Cache file: "KILNCUBN" | u32 format 1 | u32 0 | u64 payload length | 32-byte sha256 of the payload | payload.
const MAGIC = "KILNCUBN";
const HEADER_BYTES = 8 + 4 + 4 + 8 + 32;

function sha256(b: Uint8Array): Buffer {
  return createHash("sha256").update(b).digest();
}

/** The payload of a cache file, or null when it is missing, short, or does not match its header. */
export function readCacheFile(path: string): Uint8Array | null {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch {
    return null;
  }
  if (b.byteLength < HEADER_BYTES || b.toString("latin1", 0, 8) !== MAGIC || b.readUInt32LE(8) !== 1) return null;
  const len = Number(b.readBigUInt64LE(16));
  if (len !== b.byteLength - HEADER_BYTES || len === 0) return null;
  const payload = b.subarray(HEADER_BYTES);
  if (!sha256(payload).equals(b.subarray(24, 56))) return null;
  return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
}

/** Writes a cache file atomically: a temporary file in the same directory, renamed into place. */
export function writeCacheFile(path: string, payload: Uint8Array): void {
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MAGIC, 0, "latin1");
  header.writeUInt32LE(1, 8);
  header.writeBigUInt64LE(BigInt(payload.byteLength), 16);
  sha256(payload).copy(header, 24);
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    writeFileSync(tmp, Buffer.concat([header, payload]));
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Runs NVRTC on one source: the CUBIN (PTX for a compute_XX target), or KilnError CUDA_COMPILE with NVRTC's log. */
function runNvrtc(name: string, source: string, headers: readonly Header[], options: readonly string[], target: string): Uint8Array {
  const s = kiln();
  const headerBlob = Buffer.concat(headers.flatMap((h) => [cstr(h.name), cstr(h.source)]));
  const optionBlob = Buffer.concat(options.map(cstr));
  const src = Buffer.from(source, "utf8");
  const out = new BigUint64Array(1);
  compileCounters.nvrtc++;
  const status = s.kiln_nvrtc_compile(src, src.byteLength, cstr(name), headerBlob, headerBlob.byteLength, headers.length, optionBlob, optionBlob.byteLength, options.length, out);
  const prog = out[0]!;
  try {
    if (status === Status.compileFailed) throw new KilnError("CUDA_COMPILE", `${name} for ${target}: ${programLog(prog) || lastCudaError()}`);
    if (status !== Status.ok) {
      const why = lastCudaError();
      const log = prog ? programLog(prog) : "";
      throw new KilnError("CUDA_COMPILE", `${name} for ${target}: ${why}${log ? `\n${log}` : ""}`);
    }
    const size = Number(s.kiln_nvrtc_cubin(prog, null, 0));
    if (size <= 0) throw new KilnError("CUDA_COMPILE", `${name} for ${target}: ${size < 0 ? lastCudaError() : "NVRTC produced an empty image"}`);
    const image = new Uint8Array(size);
    if (Number(s.kiln_nvrtc_cubin(prog, image, size)) !== size) throw new KilnError("CUDA_COMPILE", `${name} for ${target}: ${lastCudaError()}`);
    return image;
  } finally {
    if (prog) s.kiln_nvrtc_free(prog);
  }
}

/** NVRTC's log of a program, trimmed ("" when it has none). */
function programLog(prog: bigint): string {
  const s = kiln();
  const size = Number(s.kiln_nvrtc_log(prog, null, 0));
  if (size <= 1) return "";
  const buf = new Uint8Array(size);
  if (Number(s.kiln_nvrtc_log(prog, buf, size)) !== size) return "";
  return dec.decode(buf.subarray(0, buf.indexOf(0) >= 0 ? buf.indexOf(0) : size)).trim();
}

/**
 * Compiles one kernel source (its text, named `name` in NVRTC's messages) for `arch`, with
 * every header of opts.cudaDir, through the cache.
 */
export function compileKernelSource(name: string, source: string, arch: Arch, opts: CompileOptions = {}): Uint8Array {
  const info = loadNvrtc();
  const headers = readHeaders(opts.cudaDir ?? CUDA_DIR);
  const options = nvrtcOptions(arch, opts);
  const target = archOption(arch);
  const dir = opts.cacheDir === undefined ? cacheDir() : opts.cacheDir;
  const key = cubinCacheKey({ source, headers, nvrtcVersion: info.version, options, arch, driverVersion: opts.driverVersion ?? 0 });
  const path = dir === null ? null : join(dir, `${basename(name).replace(/[^\w.-]/g, "_")}.${key}.${target.startsWith("compute_") ? "ptx" : "cubin"}`);
  if (path) {
    const cached = readCacheFile(path);
    if (cached) {
      compileCounters.cacheHits++;
      return cached;
    }
    if (existsSync(path)) compileCounters.cacheRejected++;
  }
  const image = runNvrtc(name, source, headers, options, target);
  if (path && dir) {
    try {
      mkdirSync(dir, { recursive: true });
      writeCacheFile(path, image);
    } catch {
      // A read-only or full cache directory costs a recompile next time, nothing else.
    }
  }
  return image;
}

/**
 * Compiles a kernel file (a name in opts.cudaDir, e.g. "matvec.cu", or a path) for `arch`
 * (e.g. 90 → sm_90) → CUBIN bytes, from the cache when it holds them.
 */
export function compileKernelFile(file: string, arch: Arch, opts: CompileOptions = {}): Uint8Array {
  const path = /[\\/]/.test(file) ? file : join(opts.cudaDir ?? CUDA_DIR, file);
  let source: string;
  try {
    source = readFileSync(path, "utf8");
  } catch (e) {
    throw new KilnError("CUDA_COMPILE", `${file}: cannot read the kernel source ${path} (${(e as Error).message})`);
  }
  return compileKernelSource(basename(path), source, arch, opts);
}
