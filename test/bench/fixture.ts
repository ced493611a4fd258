/** A hand-made SuiteResult for the report/regression tests (fixed numbers, not measurements). */
import type { LongRow, ModelEntry, SuiteResult } from "../../bench/suite";

export function modelEntry(model: string, k: { decode: number; prefill: number; rss: number }, l: { decode: number; prefill: number; rss: number }): ModelEntry {
  const kiln = { load_ms: 100, prefill_tok_s_128: k.prefill * 1.1, prefill_tok_s_512: k.prefill, ttft_ms_128: 128000 / (k.prefill * 1.1), ttft_ms_512: 512000 / k.prefill, decode_tok_s_short: k.decode, peak_rss_mb: k.rss };
  const llamacpp = { load_ms: 400, prefill_tok_s_128: l.prefill * 1.1, prefill_tok_s_512: l.prefill, ttft_ms_128: 128000 / (l.prefill * 1.1), ttft_ms_512: 512000 / l.prefill, decode_tok_s_short: l.decode, peak_rss_mb: l.rss };
  const ratios = Object.fromEntries(Object.keys(kiln).map((key) => [key, kiln[key as keyof typeof kiln] / llamacpp[key as keyof typeof llamacpp]]));
  return {
    model, path: `/models/${model}`, arch: "llama", file_bytes: 600 * 2 ** 20, n_layer: 22, n_embd: 2048, n_vocab: 32000, ctx: 768, batch: 512,
    prompts: [128, 512], decode_tokens: 16, reps: 3, kiln, llamacpp, ratios,
    decode_ratio: k.decode / l.decode, prefill_ratio: k.prefill / l.prefill, prefill_ratio_prompt: 512,
    roofline: {
      bandwidth_gbs: 40,
      short: { context: 136, weight_bytes: 600e6, kv_bytes: 1e6, bytes_per_token: 601e6, roofline_tok_s: 40e9 / 601e6, kiln_fraction: k.decode / (40e9 / 601e6), llamacpp_fraction: l.decode / (40e9 / 601e6) },
      long: null,
    },
    samples: { kiln: { decode_tok_s_short: [k.decode, k.decode] }, llamacpp: { decode_tok_s_short: [l.decode, l.decode] } },
    profile: { tokens: 8, context: 129, msPerToken: 1000 / k.decode, ops: [{ op: "ffn gate+up", ms: 8, calls: 22, share: 0.5 }, { op: "attention <naive & flash>", ms: 1, calls: 22, share: 0.06 }] },
    notes: ["a note"],
  };
}

export function suiteResult(withLong = true): SuiteResult {
  const rows: LongRow[] = [];
  for (const context of [512, 2048, 8192, 16384]) {
    const scale = 512 / context;
    rows.push({ context, engine: "kiln", attention: "flash", reps: 1, prefill_tok_s: 300 * (0.5 + scale / 2), prefill_ms: context / 0.3, decode_tok_s: 50 * (0.4 + scale), peak_rss_mb: 700 + context / 20 });
    rows.push({ context, engine: "kiln", attention: "naive", reps: context > 8192 ? 0 : 1, prefill_tok_s: context > 8192 ? null : 250 * scale, prefill_ms: context > 8192 ? null : context / 0.25, decode_tok_s: context > 8192 ? null : 45 * scale, peak_rss_mb: context > 8192 ? null : 900, ...(context > 8192 ? { skipped: "worker failed, killed by SIGTERM (over the limit)" } : {}) });
    rows.push({ context, engine: "llamacpp", attention: "flash", reps: 1, prefill_tok_s: 280 * (0.5 + scale / 2), prefill_ms: context / 0.28, decode_tok_s: 45 * (0.4 + scale), peak_rss_mb: 1300 + context / 20 });
    rows.push({ context, engine: "llamacpp", attention: "naive", reps: 1, prefill_tok_s: 200 * scale, prefill_ms: context / 0.2, decode_tok_s: 40 * scale, peak_rss_mb: 1500 + context / 10 });
  }
  return {
    kind: "kiln-bench", version: 1, date: "2026-01-02T03:04:05.000Z", quick: false, threads: 2, batch: 512,
    machine: { cpu: "Test CPU", cores: 2, mem_total_gb: 24, kiln_cpu_level: "x86_64-v4" },
    engines: { kiln: "kiln 0.1.0", llamacpp: "node-llama-cpp 3.22.1 (prebuilt CPU build)" },
    bandwidth_gbs: { start: 38, end: 40, best: 40 },
    models: [
      modelEntry("gemma-3-270m-Q4_K_M.gguf", { decode: 120, prefill: 950, rss: 380 }, { decode: 70, prefill: 1000, rss: 570 }),
      modelEntry("tinyllama-q4_0.gguf", { decode: 60, prefill: 150, rss: 660 }, { decode: 50, prefill: 290, rss: 1290 }),
    ],
    long_context: withLong ? { model: "tinyllama-q4_0-ctx32k.gguf", path: "/m", decode_tokens: 8, batch: 512, rows, notes: ["naive note"] } : null,
    wall_s: 1234,
    notes: ["first note"],
  };
}
