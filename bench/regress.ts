/**
 * The CI regression rule: a model's kiln ÷ llama.cpp ratios (decode_ratio, prefill_ratio) must
 * not fall below `threshold` × the committed baseline (bench/baseline.json) of the machine kind
 * the check runs on. Ratios, not times: both engines run on the same noisy machine in the same
 * run, so the machine's speed cancels; the threshold is loose (0.6) so that only a large
 * regression fails. The ratios themselves differ between machine kinds (on an Intel Xeon with
 * AMX, llama.cpp's AMX prefill narrows kiln's lead), so each kind has its own baseline, and a
 * kind with none is measured and reported, never failed: a machine change is not a regression.
 */
import type { SuiteResult } from "./suite";

export const FIGURES = ["decode_ratio", "prefill_ratio"] as const;
export type RatioFigure = (typeof FIGURES)[number];

/**
 * The machine kinds CI has run on, told apart by what changes the ratios: the vendor's kernels
 * llama.cpp picks (AMX on Intel) and the vector width kiln runs.
 */
export type MachineKind = "intel-amx" | "amd-avx512" | "other";

/** This machine's kind, from the CPU model name and libkiln's feature bits (src/ffi/library.ts cpuInfo). */
export function machineKind(cpuModel: string, features: readonly string[]): MachineKind {
  if (features.includes("amx_int8")) return "intel-amx";
  if (/\bAMD\b/i.test(cpuModel) && features.includes("avx512f")) return "amd-avx512";
  return "other";
}

/**
 * The CPU's family and model numbers as /proc/cpuinfo gives them, and the core generation for the
 * server families in CPU_GENERATIONS: the model name of these VMs is often only "AMD EPYC" or
 * "Intel(R) Xeon(R) Processor", and Zen 4 and Zen 5 (or Sapphire and Emerald Rapids) differ in
 * bandwidth, prefetch policy and kernel speed, so every figure names which one ran it.
 */
export interface CpuIdentity {
  family: number;
  model: number;
  /** "Zen 4", "Emerald Rapids", …; null for a family and model not in CPU_GENERATIONS. */
  generation: string | null;
}

/** Generations by vendor, family and model range (AMD's and Intel's published numbering). */
const CPU_GENERATIONS: readonly { vendor: "AMD" | "Intel"; family: number; models: [number, number]; name: string }[] = [
  { vendor: "AMD", family: 0x17, models: [0x00, 0xff], name: "Zen / Zen 2" },
  { vendor: "AMD", family: 0x19, models: [0x00, 0x0f], name: "Zen 3" },
  { vendor: "AMD", family: 0x19, models: [0x10, 0x1f], name: "Zen 4" },
  { vendor: "AMD", family: 0x19, models: [0x20, 0x5f], name: "Zen 3" },
  { vendor: "AMD", family: 0x19, models: [0x60, 0xaf], name: "Zen 4" },
  { vendor: "AMD", family: 0x1a, models: [0x00, 0xff], name: "Zen 5" },
  { vendor: "Intel", family: 6, models: [143, 143], name: "Sapphire Rapids" },
  { vendor: "Intel", family: 6, models: [207, 207], name: "Emerald Rapids" },
  { vendor: "Intel", family: 6, models: [173, 174], name: "Granite Rapids" },
  { vendor: "Intel", family: 6, models: [106, 108], name: "Ice Lake" },
];

/** The first processor's identity from a /proc/cpuinfo text; null where it has no family or model line. */
export function cpuIdentity(cpuinfo: string): CpuIdentity | null {
  const field = (key: string) => cpuinfo.match(new RegExp(`^${key}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim();
  const [familyText, modelText] = [field("cpu family"), field("model")];
  if (!familyText || !modelText || !/^\d+$/.test(familyText) || !/^\d+$/.test(modelText)) return null;
  const family = Number(familyText), model = Number(modelText);
  const vendorId = field("vendor_id") ?? "";
  const vendor = vendorId === "AuthenticAMD" ? "AMD" : vendorId === "GenuineIntel" ? "Intel" : null;
  const g = CPU_GENERATIONS.find((c) => c.vendor === vendor && c.family === family && model >= c.models[0] && model <= c.models[1]);
  return { family, model, generation: g?.name ?? null };
}

/** "family 25 model 17 (Zen 4)": how reports name a CPU identity. */
export function describeCpuIdentity(id: CpuIdentity): string {
  return `family ${id.family} model ${id.model}${id.generation ? ` (${id.generation})` : ""}`;
}

/** bench/baseline.json: one baseline per machine kind measured. */
export interface BaselineFile {
  kinds: Partial<Record<MachineKind, Baseline>>;
}

export function checkBaselineFile(b: unknown, where = "baseline"): BaselineFile {
  const x = b as BaselineFile;
  if (!x || typeof x !== "object" || !x.kinds || typeof x.kinds !== "object") throw new Error(`${where}: expected { kinds: { <machine kind>: baseline } }`);
  const known: MachineKind[] = ["intel-amx", "amd-avx512", "other"];
  for (const [k, v] of Object.entries(x.kinds)) {
    if (!known.includes(k as MachineKind)) throw new Error(`${where}: unknown machine kind "${k}" (expected ${known.join(", ")})`);
    checkBaseline(v, `${where} (${k})`);
  }
  return x;
}

export interface Baseline {
  /** How and where the baseline was measured. */
  description: string;
  /** Fail below threshold × baseline. */
  threshold: number;
  models: Record<string, Record<RatioFigure, number>>;
}

export interface RegressionFinding {
  model: string;
  figure: RatioFigure;
  baseline: number;
  measured: number | null;
  /** threshold × baseline */
  floor: number;
  ok: boolean;
  message: string;
}

export function checkBaseline(b: unknown, where = "baseline"): Baseline {
  const x = b as Baseline;
  if (!x || typeof x !== "object") throw new Error(`${where}: not an object`);
  if (!(typeof x.threshold === "number" && x.threshold > 0 && x.threshold <= 1)) throw new Error(`${where}: threshold must be a number in (0, 1], got ${JSON.stringify(x.threshold)}`);
  if (!x.models || typeof x.models !== "object" || Object.keys(x.models).length === 0) throw new Error(`${where}: models must name at least one model`);
  for (const [m, figs] of Object.entries(x.models)) {
    for (const f of FIGURES) {
      const v = figs?.[f];
      if (!(typeof v === "number" && Number.isFinite(v) && v > 0)) throw new Error(`${where}: ${m}.${f} must be a positive number, got ${JSON.stringify(v)}`);
    }
  }
  return x;
}

/** Compares every baseline figure with the run's; a model missing from the run fails. */
export function compareToBaseline(result: Pick<SuiteResult, "models">, baseline: Baseline, threshold = baseline.threshold): RegressionFinding[] {
  const out: RegressionFinding[] = [];
  for (const [model, figs] of Object.entries(baseline.models)) {
    const entry = result.models.find((m) => m.model === model);
    for (const figure of FIGURES) {
      const base = figs[figure];
      const floor = threshold * base;
      const measured = entry ? entry[figure] : null;
      const ok = typeof measured === "number" && Number.isFinite(measured) && measured >= floor;
      const message = !entry
        ? `${model}: ${figure} not measured (model missing from the run); baseline ${base.toFixed(2)}`
        : measured === null
          ? `${model}: ${figure} not measured; baseline ${base.toFixed(2)}`
          : `${model}: ${figure} ${ok ? "ok" : "REGRESSION"}: measured ${measured.toFixed(2)}, baseline ${base.toFixed(2)}, floor ${floor.toFixed(2)} (${threshold}× baseline)`;
      out.push({ model, figure, baseline: base, measured: measured ?? null, floor, ok, message });
    }
  }
  return out;
}

/**
 * The findings after a confirmation run: a figure that fell below its floor in the first run is
 * measured again (the models it names), and fails only when it is below the floor in that run too.
 * This host's read bandwidth changes state within seconds (35 vs 65 GB/s at 2 threads) and other
 * tenants come and go: one unlucky run is not a regression, a regression is below the floor twice.
 */
export function confirmFindings(first: readonly RegressionFinding[], again: readonly RegressionFinding[]): RegressionFinding[] {
  return first.map((f) => {
    if (f.ok) return f;
    const g = again.find((x) => x.model === f.model && x.figure === f.figure);
    if (!g) return { ...f, message: `${f.message}; not measured again` };
    const measured = g.ok ? g.measured : Math.max(f.measured ?? -Infinity, g.measured ?? -Infinity);
    return g.ok
      ? { ...g, message: `${g.message} (measured again: the first run's ${f.measured?.toFixed(2) ?? "—"} was below the floor)` }
      : { ...g, measured: Number.isFinite(measured) ? measured : null, message: `${f.model}: ${f.figure} REGRESSION, twice: measured ${f.measured?.toFixed(2) ?? "—"} then ${g.measured?.toFixed(2) ?? "—"}, baseline ${f.baseline.toFixed(2)}, floor ${f.floor.toFixed(2)}` };
  });
}

/** A baseline from a run: its ratios for the given models. */
export function baselineFrom(result: Pick<SuiteResult, "models">, description: string, threshold = 0.6): Baseline {
  const models: Baseline["models"] = {};
  for (const m of result.models) {
    if (m.decode_ratio === null || m.prefill_ratio === null) throw new Error(`${m.model}: a ratio is missing; cannot make a baseline from this run`);
    models[m.model] = { decode_ratio: Number(m.decode_ratio.toFixed(3)), prefill_ratio: Number(m.prefill_ratio.toFixed(3)) };
  }
  return { description, threshold, models };
}
