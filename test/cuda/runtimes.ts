/**
 * The device runtimes a CUDA kernel test runs on: the host emulator always, and the real CUDA
 * runtime too when src/backends/cuda/driver.ts finds a GPU (its `probeCuda()`). Without one, a
 * test file prints one visible notice that its GPU half is skipped.
 *
 *   await forEachRuntime(import.meta.file, (rt) => {
 *     test("rmsnorm", () => { ... rt.alloc(...) ... });
 *   });
 *
 * Each runtime gets a describe block named after it; runtimes are disposed after the file.
 */
import { afterAll, describe } from "bun:test";
import { EmulatorRuntime } from "../../src/backends/cuda/emulator";
import type { DeviceRuntime } from "../../src/backends/cuda/runtime";

export interface NamedRuntime {
  name: string;
  rt: DeviceRuntime;
}

let gpu: Promise<{ make: (() => DeviceRuntime) | null; why: string }> | undefined;

/** Whether a probe result says a device is present: true, or an object with present/available/ok true or a positive device count. */
function probeSaysPresent(p: unknown): boolean {
  if (typeof p === "boolean") return p;
  if (!p || typeof p !== "object") return false;
  const o = p as Record<string, unknown>;
  for (const k of ["present", "available", "ok"]) if (typeof o[k] === "boolean") return o[k] as boolean;
  for (const k of ["deviceCount", "devices", "count"]) {
    const v = o[k];
    if (typeof v === "number") return v > 0;
    if (Array.isArray(v)) return v.length > 0;
  }
  return false;
}

function probeReason(p: unknown): string {
  if (p && typeof p === "object") {
    const o = p as Record<string, unknown>;
    for (const k of ["reason", "why", "error", "message"]) if (typeof o[k] === "string") return o[k] as string;
  }
  return "no GPU";
}

async function findGpu(): Promise<{ make: (() => DeviceRuntime) | null; why: string }> {
  if (process.env.KILN_CUDA_TESTS === "emulator") return { make: null, why: "KILN_CUDA_TESTS=emulator" };
  let mod: Record<string, unknown>;
  try {
    mod = (await import("../../src/backends/cuda/driver")) as Record<string, unknown>;
  } catch (e) {
    return { make: null, why: `no GPU runtime (src/backends/cuda/driver.ts: ${(e as Error).message.split("\n")[0]})` };
  }
  const probe = mod.probeCuda;
  if (typeof probe !== "function") return { make: null, why: "src/backends/cuda/driver.ts exports no probeCuda()" };
  let p: unknown;
  try {
    p = await (probe as () => unknown)();
  } catch (e) {
    return { make: null, why: `probeCuda() threw: ${(e as Error).message.split("\n")[0]}` };
  }
  if (!probeSaysPresent(p)) return { make: null, why: probeReason(p) };
  const factory = mod.createCudaRuntime;
  const Cls = mod.CudaRuntime;
  if (typeof factory === "function") return { make: () => (factory as () => DeviceRuntime)(), why: "" };
  if (typeof Cls === "function") return { make: () => new (Cls as new () => DeviceRuntime)(), why: "" };
  return { make: null, why: "src/backends/cuda/driver.ts exports neither createCudaRuntime() nor CudaRuntime" };
}

/**
 * The runtimes for a test file: [emulator] plus the GPU when one is present. Prints one notice
 * per file (to stderr) when the GPU half is skipped.
 */
export async function testRuntimes(file: string): Promise<NamedRuntime[]> {
  gpu ??= findGpu();
  const g = await gpu;
  // KILN_CUDA_TESTS=gpu: the GPU half alone (a device machine's time is short; CI runs the emulator half).
  const gpuOnly = process.env.KILN_CUDA_TESTS === "gpu" && g.make !== null;
  const list: NamedRuntime[] = gpuOnly ? [] : [{ name: "emulator", rt: new EmulatorRuntime() }];
  if (g.make) {
    const rt = g.make();
    list.push({ name: `cuda:${rt.deviceIndex} ${rt.deviceName}`, rt });
  } else {
    process.stderr.write(`[cuda] ${g.why}: the GPU half of ${file} is skipped (emulator only)\n`);
  }
  return list;
}

/** Registers `body` once per runtime, in a describe block named after it; disposes the runtimes after the file. */
export async function forEachRuntime(file: string, body: (rt: DeviceRuntime, name: string) => void): Promise<void> {
  const list = await testRuntimes(file);
  afterAll(() => {
    for (const { rt } of list) rt.dispose();
  });
  for (const { name, rt } of list) describe(name, () => body(rt, name));
}

/** Host helpers for kernel tests. */
export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Sentinel byte the guard region after an output buffer is filled with. */
export const GUARD_BYTE = 0xa5;

/**
 * Allocates `byteLength` bytes plus `guard` guard bytes, uploads `init` (or a byte pattern) and the
 * sentinel guard; returns the buffer limited to byteLength and a check that the guard is intact.
 */
export function guarded(rt: DeviceRuntime, byteLength: number, label: string, init?: Uint8Array, guard = 64) {
  const whole = rt.alloc(byteLength + guard, label);
  const bytes = new Uint8Array(byteLength + guard).fill(GUARD_BYTE);
  if (init) bytes.set(init.subarray(0, byteLength));
  rt.upload(whole, bytes);
  const buf = { ptr: whole.ptr, byteLength, label };
  return {
    buf,
    whole,
    /** Throws when a byte past byteLength changed. */
    checkGuard(): void {
      const g = new Uint8Array(guard);
      rt.download(whole, g, byteLength);
      const bad = g.findIndex((b) => b !== GUARD_BYTE);
      if (bad >= 0) throw new Error(`${label}: guard byte ${bad} past the end was overwritten (0x${g[bad]!.toString(16)})`);
    },
    read(): Uint8Array {
      const out = new Uint8Array(byteLength);
      rt.download(whole, out);
      return out;
    },
    readF32(): Float32Array {
      const out = new Uint8Array(byteLength);
      rt.download(whole, out);
      return new Float32Array(out.buffer);
    },
  };
}
