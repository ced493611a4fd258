/**
 * Which backend a model loads onto: LoadOptions.device.
 *   "cpu"            the CPU kernels (never touches a GPU driver);
 *   "cuda", "cuda:N" an NVIDIA GPU (device 0, or ordinal N); a clear KilnError CUDA when there is
 *                    no driver, no such device or no NVRTC;
 *   "auto" (default) the first CUDA device when the driver probe finds one, else the CPU. The
 *                    probe (one dlopen of libcuda.so.1) runs once per process and is cached.
 * KILN_DEVICE, read once when this module loads, replaces "auto" (e.g. KILN_DEVICE=cpu).
 */
import { KilnError } from "../errors";
import type { Backend } from "./backend";
import { CPU_BACKEND } from "./cpu-backend";
import { CudaBackend } from "./cuda/backend";
import { CudaRuntime, probeCuda } from "./cuda/driver";

/** Where a model runs (LoadOptions.device): "auto", "cpu", "cuda" or "cuda:<ordinal>" (docs/gpu.md). */
export type DeviceOption = "auto" | "cpu" | "cuda" | `cuda:${number}`;

const envDevice = process.env.KILN_DEVICE || undefined;

/** Oldest GPU major version the kernels run on: mma.sync.m16n8k16 with f16 inputs is sm_80+. */
export const MIN_COMPUTE_CAPABILITY = 8;

/** Parses a device option: the backend kind and the device ordinal. */
export function parseDevice(device: string): { kind: "auto" | "cpu" | "cuda"; index: number } {
  if (device === "auto" || device === "cpu") return { kind: device, index: 0 };
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new KilnError("BAD_OPTION", `device must be "auto", "cpu", "cuda" or "cuda:<ordinal>", got ${JSON.stringify(device)}`);
  return { kind: "cuda", index: m[1] === undefined ? 0 : Number(m[1]) };
}

/** The backend for `device` (opened now; the caller disposes it with the model). */
export function selectBackend(device: string | undefined): Backend {
  const want = parseDevice(device ?? envDevice ?? "auto");
  if (want.kind === "cpu") return CPU_BACKEND;
  const probe = probeCuda();
  if (want.kind === "auto") {
    // The first GPU the kernels run on (tensor-core MMA needs compute capability 8.0), else the CPU.
    const d = probe.available ? probe.devices?.find((x) => x.computeCapability[0] >= MIN_COMPUTE_CAPABILITY) : undefined;
    return d ? new CudaBackend(new CudaRuntime(d.index), { ownsRuntime: true }) : CPU_BACKEND;
  }
  if (!probe.available) throw new KilnError("CUDA", `device "${device ?? envDevice}" asked for a GPU, but CUDA is not available: ${probe.reason}`);
  const n = probe.devices?.length ?? 0;
  const d = probe.devices?.[want.index];
  if (!d) throw new KilnError("CUDA", `device cuda:${want.index} does not exist: the driver reports ${n} CUDA device${n === 1 ? "" : "s"}`);
  if (d.computeCapability[0] < MIN_COMPUTE_CAPABILITY) {
    throw new KilnError("CUDA", `cuda:${d.index} (${d.name}) has compute capability ${d.computeCapability.join(".")}; kiln's CUDA kernels need ${MIN_COMPUTE_CAPABILITY}.0 or newer (Ampere+): use device "cpu"`);
  }
  return new CudaBackend(new CudaRuntime(want.index), { ownsRuntime: true });
}
