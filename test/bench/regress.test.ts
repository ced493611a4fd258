/** The CI regression rule (a large drop of a ratio fails, noise passes) and the suite's pure helpers. */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { baselineFrom, checkBaseline, checkBaselineFile, compareToBaseline, confirmFindings, cpuIdentity, describeCpuIdentity, machineKind, type Baseline } from "../../bench/regress";
import { STATE_SPREAD, contextFor, engineFigures, headlinePrompt, measurePairs, median, modelRuns, oneState, pairedRatios, pairedRooflinePoint, parseList, rooflinePoint, workerBandwidths } from "../../bench/suite";
import type { WorkerResult } from "../../bench/worker";
import { modelEntry } from "./fixture";

const baseline: Baseline = {
  description: "test",
  threshold: 0.6,
  models: { "a.gguf": { decode_ratio: 1.5, prefill_ratio: 1.0 }, "b.gguf": { decode_ratio: 1.2, prefill_ratio: 0.5 } },
};
const run = (a: [number, number], b: [number, number]) => ({
  models: [
    modelEntry("a.gguf", { decode: a[0] * 50, prefill: a[1] * 300, rss: 1 }, { decode: 50, prefill: 300, rss: 1 }),
    modelEntry("b.gguf", { decode: b[0] * 50, prefill: b[1] * 300, rss: 1 }, { decode: 50, prefill: 300, rss: 1 }),
  ],
});

describe("regression check", () => {
  test("noise passes: ratios somewhat below and above the baseline", () => {
    for (const [a, b] of [[[1.2, 0.8], [1.0, 0.4]], [[1.8, 1.3], [1.5, 0.7]], [[0.91, 0.61], [0.73, 0.31]]] as [[number, number], [number, number]][]) {
      const f = compareToBaseline(run(a, b), baseline);
      expect(f.length).toBe(4);
      expect(f.every((x) => x.ok)).toBe(true);
    }
  });

  test("a large regression fails, naming model, figure, baseline and measured", () => {
    const f = compareToBaseline(run([1.5, 1.0], [0.6, 0.5]), baseline);
    const bad = f.filter((x) => !x.ok);
    expect(bad.length).toBe(1);
    expect(bad[0]!.model).toBe("b.gguf");
    expect(bad[0]!.figure).toBe("decode_ratio");
    expect(bad[0]!.measured).toBeCloseTo(0.6, 6);
    expect(bad[0]!.message).toBe("b.gguf: decode_ratio REGRESSION: measured 0.60, baseline 1.20, floor 0.72 (0.6× baseline)");
  });

  test("a figure below its floor is confirmed by a second run: it fails only when below twice", () => {
    const first = compareToBaseline(run([0.8, 1.0], [0.6, 0.2]), baseline); // a.decode 0.8 < 0.9; b.decode 0.6 < 0.72, b.prefill 0.2 < 0.3
    expect(first.filter((x) => !x.ok).length).toBe(3);
    // Measured again: a's decode recovers (one unlucky run), b's decode stays low, b's prefill is low again.
    const again = compareToBaseline(run([1.4, 1.0], [0.5, 0.25]), baseline);
    const f = confirmFindings(first, again);
    const by = (m: string, fig: string) => f.find((x) => x.model === m && x.figure === fig)!;
    expect(by("a.gguf", "decode_ratio").ok).toBe(true);
    expect(by("a.gguf", "decode_ratio").measured).toBeCloseTo(1.4, 6);
    expect(by("a.gguf", "decode_ratio").message).toContain("(measured again: the first run's 0.80 was below the floor)");
    expect(by("a.gguf", "prefill_ratio")).toEqual(first.find((x) => x.model === "a.gguf" && x.figure === "prefill_ratio")!); // ok first time: untouched
    expect(by("b.gguf", "decode_ratio").ok).toBe(false);
    expect(by("b.gguf", "decode_ratio").message).toBe("b.gguf: decode_ratio REGRESSION, twice: measured 0.60 then 0.50, baseline 1.20, floor 0.72");
    expect(by("b.gguf", "decode_ratio").measured).toBeCloseTo(0.6, 6); // the better of the two
    expect(by("b.gguf", "prefill_ratio").ok).toBe(false);
    // A figure the second run did not measure stays a failure.
    const g = confirmFindings(first, again.filter((x) => x.model === "a.gguf"));
    expect(g.filter((x) => !x.ok).map((x) => x.message)).toEqual([
      "b.gguf: decode_ratio REGRESSION: measured 0.60, baseline 1.20, floor 0.72 (0.6× baseline); not measured again",
      "b.gguf: prefill_ratio REGRESSION: measured 0.20, baseline 0.50, floor 0.30 (0.6× baseline); not measured again",
    ]);
  });

  test("a model the run did not measure fails", () => {
    const f = compareToBaseline({ models: run([1.5, 1], [1.2, 0.5]).models.slice(0, 1) }, baseline);
    expect(f.filter((x) => !x.ok).map((x) => x.message)).toEqual([
      "b.gguf: decode_ratio not measured (model missing from the run); baseline 1.20",
      "b.gguf: prefill_ratio not measured (model missing from the run); baseline 0.50",
    ]);
  });

  test("baselines: made from a run, validated with named errors; the committed one is valid", () => {
    const b = baselineFrom(run([1.5, 1], [1.2, 0.5]), "made here");
    expect(b.models["b.gguf"]).toEqual({ decode_ratio: 1.2, prefill_ratio: 0.5 });
    expect(checkBaseline(b)).toBe(b);
    expect(() => checkBaseline({ ...b, threshold: 2 }, "x.json")).toThrow("x.json: threshold must be a number in (0, 1], got 2");
    expect(() => checkBaseline({ ...b, models: { "m.gguf": { decode_ratio: 1 } } })).toThrow("baseline: m.gguf.prefill_ratio must be a positive number, got undefined");
    expect(() => checkBaseline({ ...b, models: {} })).toThrow(/at least one model/);
    const committed = checkBaselineFile(JSON.parse(readFileSync(join(import.meta.dir, "..", "..", "bench", "baseline.json"), "utf8")));
    for (const kind of ["amd-avx512", "intel-amx"] as const) expect(Object.keys(committed.kinds[kind]!.models).sort()).toEqual(["gemma-3-270m-Q4_K_M.gguf", "tinyllama-q4_0.gguf"]);
    expect(() => checkBaselineFile({ kinds: { "amd-zen9": b } }, "x.json")).toThrow('x.json: unknown machine kind "amd-zen9"');
    expect(() => checkBaselineFile({ kinds: { "intel-amx": { ...b, threshold: 0 } } }, "x.json")).toThrow("x.json (intel-amx): threshold must be");
    expect(() => checkBaselineFile(b, "x.json")).toThrow("x.json: expected { kinds");
  });

  test("machine kinds: AMX → intel-amx, an AMD with AVX-512 → amd-avx512, anything else → other (no baseline: never failed)", () => {
    expect(machineKind("Intel(R) Xeon(R) Platinum 8480C", ["avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"])).toBe("intel-amx");
    expect(machineKind("AMD EPYC 9R14 96-Core Processor", ["avx2", "avx512f", "avx512_vnni"])).toBe("amd-avx512");
    expect(machineKind("AMD EPYC 7R13 Processor", ["avx2", "fma"])).toBe("other");
    expect(machineKind("Intel(R) Xeon(R) CPU E5-2686 v4", ["avx2"])).toBe("other");
    expect(machineKind("Neoverse-V2", ["asimd", "asimddp"])).toBe("other");
  });

  test("CPU identity: family and model from /proc/cpuinfo, the generation where known", () => {
    const info = (vendor: string, family: number, model: number) =>
      `processor\t: 0\nvendor_id\t: ${vendor}\ncpu family\t: ${family}\nmodel\t\t: ${model}\nmodel name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: ${vendor}\ncpu family\t: 99\nmodel\t\t: 99\n`;
    expect(cpuIdentity(info("AuthenticAMD", 25, 17))).toEqual({ family: 25, model: 17, generation: "Zen 4" });
    expect(cpuIdentity(info("AuthenticAMD", 25, 1))).toEqual({ family: 25, model: 1, generation: "Zen 3" });
    expect(cpuIdentity(info("AuthenticAMD", 26, 2))).toEqual({ family: 26, model: 2, generation: "Zen 5" });
    expect(cpuIdentity(info("GenuineIntel", 6, 207))).toEqual({ family: 6, model: 207, generation: "Emerald Rapids" });
    expect(cpuIdentity(info("GenuineIntel", 6, 167))).toEqual({ family: 6, model: 167, generation: null });
    // The numbers alone do not name a generation: family 25 under another vendor is unknown.
    expect(cpuIdentity(info("HygonGenuine", 25, 17))?.generation).toBeNull();
    expect(describeCpuIdentity({ family: 25, model: 17, generation: "Zen 4" })).toBe("family 25 model 17 (Zen 4)");
    expect(describeCpuIdentity({ family: 6, model: 167, generation: null })).toBe("family 6 model 167");
    expect(cpuIdentity("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")).toBeNull();
    expect(cpuIdentity("cpu family\t: 25\nmodel\t\t: x17\n")).toBeNull();
  });
});

describe("suite helpers", () => {
  test("median, ratios, headline prompt, context size, runs", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([null, 5, Number.NaN])).toBe(5);
    expect(median([])).toBeNull();
    expect(pairedRatios({ a: [2], b: [null], c: [1] }, { a: [4], b: [1], d: [1] })).toEqual({ a: 0.5, b: null });
    expect(headlinePrompt([128, 512, 2048])).toBe(512);
    expect(headlinePrompt([32, 64])).toBe(64);
    expect(headlinePrompt([128, 1024])).toBe(128);
    expect(contextFor([{ prompt: 2048, decode: 32 }])).toBe(2304);
    expect(contextFor([{ prompt: 16384, decode: 8 }])).toBe(16640);
    expect(modelRuns([128, 512, 2048], 32)).toEqual([{ prompt: 128, decode: 32 }, { prompt: 512, decode: 0 }, { prompt: 2048, decode: 32 }]);
    expect(parseList("128, 512", "prompts")).toEqual([128, 512]);
    expect(() => parseList("128,x", "prompts")).toThrow('--prompts must be a comma-separated list of positive integers, got "128,x"');
  });

  test("engine figures are medians over reps", () => {
    const w = (load: number, p: number, d: number): WorkerResult => ({
      engine: "kiln", load_ms: load, peak_rss_bytes: 100 * 2 ** 20, rss_after_load_bytes: 0,
      runs: [{ prompt: 128, ttft_ms: 128000 / p, prefill_tok_s: p, decode: 16, decode_ms: 16000 / d, decode_tok_s: d, decode_mean_tok_s: d }, { prompt: 2048, ttft_ms: 1, prefill_tok_s: p / 2, decode: 16, decode_ms: 1, decode_tok_s: d / 2, decode_mean_tok_s: 16000 }],
    });
    const { figures, samples } = engineFigures([w(10, 100, 40), w(30, 300, 60), w(20, 200, 50)], [128, 2048]);
    expect(figures).toEqual({ load_ms: 20, peak_rss_mb: 100, prefill_tok_s_128: 200, ttft_ms_128: 640, decode_tok_s_short: 50, decode_mean_tok_s_short: 50, prefill_tok_s_2048: 100, ttft_ms_2048: 1, decode_tok_s_2048: 25, decode_mean_tok_s_2048: 16000 });
    expect(samples.decode_tok_s_short).toEqual([40, 60, 50]);
  });

  test("paired ratios: the median of each rep's kiln ÷ llama.cpp, not the ratio of medians", () => {
    // Rep 1 at the low bandwidth state, reps 2 and 3 at the high one, where both engines run faster.
    const k = { decode: [60, 100, 104], load: [10, null, 12] };
    const l = { decode: [40, 50, 52], load: [20, 20, 24], other: [1, 1, 1] };
    const r = pairedRatios(k, l);
    expect(r.decode).toBeCloseTo(2, 9); // pairs 1.5, 2.0, 2.0; the ratio of medians would be 100 / 50 = 2 by chance…
    expect(pairedRatios({ d: [60, 100, 110] }, { d: [40, 90, 50] }).d).toBeCloseTo(1.5, 9); // …here it would be 100 / 50 = 2
    expect(r.load).toBeCloseTo(0.5, 9); // a missing sample drops that pair only
    expect("other" in r).toBe(false);
  });

  test("one bandwidth state: probes within STATE_SPREAD of each other", () => {
    expect(STATE_SPREAD).toBe(1.2);
    expect(oneState([35, 36, 41.9])).toBe(true);
    expect(oneState([35, 36, 42.1])).toBe(false);
    expect(oneState([62, 36, 63])).toBe(false);
    expect(oneState([])).toBe(false);
    expect(oneState([0, 0])).toBe(false);
  });

  test("the bandwidth beside each measurement, and roofline fractions against it", () => {
    const pairs = [
      { order: ["kiln", "llamacpp"] as ("kiln" | "llamacpp")[], bandwidth_gbs: [36, 38, 40], one_state: true, discarded: 0 },
      { order: ["llamacpp", "kiln"] as ("kiln" | "llamacpp")[], bandwidth_gbs: [64, 66, 60], one_state: true, discarded: 1 },
    ];
    const bw = workerBandwidths(pairs);
    expect(bw).toEqual({ kiln: [37, 63], llamacpp: [39, 65] });
    // 1 GB per token: kiln 30 tok/s at 37 GB/s and 50 at 63; llama.cpp 20 at 39 and 40 at 65.
    const p = pairedRooflinePoint(0.9e9, 0.1e9, 200, [30, 50], [20, 40], bw);
    expect(p.bytes_per_token).toBe(1e9);
    expect(p.roofline_tok_s).toBeCloseTo(51, 9); // median probe (37, 39, 63, 65) = 51 GB/s
    expect(p.kiln_fraction).toBeCloseTo((30 / 37 + 50 / 63) / 2, 9);
    expect(p.llamacpp_fraction).toBeCloseTo((20 / 39 + 40 / 65) / 2, 9);
    expect(pairedRooflinePoint(1, 0, 1, [null], [5], { kiln: [1], llamacpp: [1] }).kiln_fraction).toBeNull();
  });

  test("pairs: a pair across a bandwidth change is measured again, within a budget of one repeat per rep", async () => {
    const run = async (probes: number[], reps: number) => {
      const seq = [...probes];
      const measured: string[] = [];
      const logs: string[] = [];
      let n = 0;
      const out = await measurePairs(reps, async (engine, rep) => {
        measured.push(`${engine}${rep}`);
        return n++;
      }, () => {
        const x = seq.shift();
        if (x === undefined) throw new Error("probe sequence ran out");
        return x;
      }, (s) => logs.push(s));
      expect(seq).toEqual([]); // every probe was taken: before, between and after each pair
      return { ...out, measured, logs };
    };
    // Rep 1 changes state between kiln and llama.cpp: measured again; rep 2 is steady.
    let r = await run([36, 37, 64, 65, 64, 66, 65, 66, 64], 2);
    expect(r.measured).toEqual(["kiln0", "llamacpp0", "kiln0", "llamacpp0", "llamacpp1", "kiln1"]);
    expect(r.results).toEqual({ kiln: [2, 5], llamacpp: [3, 4] });
    expect(r.pairs.map((p) => [p.bandwidth_gbs, p.one_state, p.discarded])).toEqual([[[65, 64, 66], true, 1], [[65, 66, 64], true, 0]]);
    expect(r.logs[0]).toContain("the bandwidth changed during rep 1: 36.0 → 37.0 → 64.0 GB/s; measuring the pair again");
    // A state that keeps changing: one repeat in all for one rep, then the pair is kept and marked.
    r = await run([36, 64, 36, 64, 36, 64], 1);
    expect(r.measured).toEqual(["kiln0", "llamacpp0", "kiln0", "llamacpp0"]);
    expect(r.results).toEqual({ kiln: [2], llamacpp: [3] });
    expect(r.pairs).toEqual([{ order: ["kiln", "llamacpp"], bandwidth_gbs: [64, 36, 64], one_state: false, discarded: 1 }]);
    expect(r.logs.at(-1)).toContain("no repeats are left: kept, marked");
    // Without a probe: the reps, alternating, no pairs recorded.
    const plain = await measurePairs(3, async (engine, rep) => `${engine}${rep}`, null, () => {});
    expect(plain).toEqual({ results: { kiln: ["kiln0", "kiln1", "kiln2"], llamacpp: ["llamacpp0", "llamacpp1", "llamacpp2"] }, pairs: [] });
  });

  test("roofline: bandwidth over bytes per token, and each engine's fraction", () => {
    const p = rooflinePoint(600e6, 40e6, 2048, 40, 50, 25);
    expect(p.bytes_per_token).toBe(640e6);
    expect(p.roofline_tok_s).toBeCloseTo(62.5, 9);
    expect(p.kiln_fraction).toBeCloseTo(0.8, 9);
    expect(p.llamacpp_fraction).toBeCloseTo(0.4, 9);
    expect(rooflinePoint(1, 0, 1, 1, null, undefined).kiln_fraction).toBeNull();
  });
});
