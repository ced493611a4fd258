/**
 * `kiln bench` runs from the checkout's dev command (scripts/kiln.ts, `bun run kiln`), which hands
 * everything else to the published src/cli.ts.
 * `kiln bench --json --quick` on a tiny synthetic model (both engines, one rep: the JSON shape,
 * not timings), bench's errors on bad input, and the per-op profile of `kiln generate --profile`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src/runtime/model";
import { formatProfile, profileDecode } from "../../src/runtime/profile";
import * as cpu from "../../src/backends/cpu";
import { writeSyntheticModel } from "../../src/tools/synthetic-model";

const dir = mkdtempSync(join(tmpdir(), "kiln-bench-cli-"));
const model = join(dir, "tiny.gguf");
beforeAll(() => writeSyntheticModel(model, { arch: "llama", type: "q4_0", shape: "tiny", seed: 1 }));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const CLI = join(import.meta.dir, "..", "..", "scripts", "kiln.ts");

function kiln(...args: string[]) {
  // KILN_BENCH_QUIET_WAIT_MS=0: never wait for the machine to be idle (the test checks shapes, not timings).
  const p = Bun.spawnSync([process.execPath, CLI, ...args], { stdout: "pipe", stderr: "pipe", timeout: 120_000, env: { ...process.env, KILN_BENCH_QUIET_WAIT_MS: "0" } });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

describe("kiln bench", () => {
  test("--json --quick: one JSON object with raw figures, ratios, roofline and profile per model", () => {
    const out = join(dir, "results");
    const r = kiln("bench", "--model", model, "--json", "--quick", "--prompts", "32,64", "--decode", "4", "--reps", "1", "--profile", "--out", out);
    expect(r.err).not.toContain("error");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines.length).toBe(1);
    const j = JSON.parse(lines[0]!);
    expect(j.kind).toBe("kiln-bench");
    expect(j.quick).toBe(true);
    expect(j.long_context).toBeNull();
    expect(j.bandwidth_gbs.best).toBeGreaterThan(0);
    expect(j.models.length).toBe(1);
    const m = j.models[0];
    // A measurement disturbed by other processes is repeated, and so is a pair across a change
    // of the host's bandwidth (at most once per rep).
    expect(m.pairs[0].discarded).toBeLessThanOrEqual(1);
    expect(j.load.workers).toBe(2 * (1 + m.pairs[0].discarded) + j.load.retries);
    expect(m.model).toBe("tiny.gguf");
    expect(m.prompts).toEqual([32, 64]);
    for (const engine of ["kiln", "llamacpp"]) {
      for (const k of ["load_ms", "peak_rss_mb", "prefill_tok_s_32", "prefill_tok_s_64", "ttft_ms_32", "ttft_ms_64", "decode_tok_s_short"]) {
        expect(typeof m[engine][k]).toBe("number");
        expect(m[engine][k]).toBeGreaterThan(0);
      }
      expect(m.samples[engine].decode_tok_s_short.length).toBe(1);
    }
    expect(m.decode_ratio).toBeCloseTo(m.kiln.decode_tok_s_short / m.llamacpp.decode_tok_s_short, 9);
    expect(m.prefill_ratio).toBeCloseTo(m.kiln.prefill_tok_s_64 / m.llamacpp.prefill_tok_s_64, 9);
    expect(m.prefill_ratio_prompt).toBe(64);
    expect(m.ratios.peak_rss_mb).toBeCloseTo(m.kiln.peak_rss_mb / m.llamacpp.peak_rss_mb, 9);
    expect(m.roofline.short.bytes_per_token).toBeGreaterThan(m.roofline.short.kv_bytes);
    // The bandwidth probed before, between and after the pair; kiln's fraction is against its own.
    expect(m.pairs.length).toBe(1);
    expect(m.pairs[0].order).toEqual(["kiln", "llamacpp"]);
    expect(m.pairs[0].bandwidth_gbs.length).toBe(3);
    const kilnGBs = (m.pairs[0].bandwidth_gbs[0] + m.pairs[0].bandwidth_gbs[1]) / 2;
    expect(m.roofline.short.kiln_fraction).toBeCloseTo((m.kiln.decode_tok_s_short * m.roofline.short.bytes_per_token) / (kilnGBs * 1e9), 9);
    expect(m.notes.join(" ")).toContain("Bandwidth probed beside every measurement");
    expect(m.roofline.long).toBeNull();
    expect(m.profile.ops.map((o: { op: string }) => o.op)).toContain("attention");
    // written files
    expect(JSON.parse(readFileSync(join(out, "bench-latest.json"), "utf8")).models[0].model).toBe("tiny.gguf");
    expect(readFileSync(join(out, "report.md"), "utf8")).toContain("| tiny.gguf |");
    expect(existsSync(join(out, "perf-context.svg"))).toBe(false);
  }, 60_000);

  test("bad input: a clear error naming the problem, exit 2", () => {
    let r = kiln("bench", "--model", join(dir, "missing.gguf"), "--no-write");
    expect(r.code).toBe(2);
    expect(r.err).toContain(`--model ${join(dir, "missing.gguf")}: no such file`);
    r = kiln("bench", "--model", model, "--reps", "two", "--no-write");
    expect(r.code).toBe(2);
    expect(r.err).toContain('--reps must be a positive integer, got "two"');
    r = kiln("bench", "--model", model, "--frobnicate");
    expect(r.code).toBe(2);
    expect(r.err).toContain("usage: kiln bench");
    r = kiln("bench", "--model", dir, "--no-write");
    expect(r.code).toBe(2);
    expect(r.err).toContain("is a directory");
    r = kiln("bench", "--model", model, "--resume", join(dir, "none.json"), "--no-write");
    expect(r.code).toBe(2);
    expect(r.err).toContain(`--resume: ${join(dir, "none.json")}: no such results file`);
  });
});

describe("per-op profile", () => {
  test("kiln generate --profile --json carries the breakdown; text mode prints the table", () => {
    const r = kiln("generate", "--model", model, "--prompt", "hello", "--max-tokens", "4", "--temperature", "0", "--profile", "--json", "--ctx", "64");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    const ops = j.profile.ops.map((o: { op: string }) => o.op);
    for (const op of ["output head", "matmul attn q/k/v", "ffn gate+up", "matmul ffn down", "attention", "norm", "rope", "sampling (argmax)", "other (TS, FFI, bookkeeping)"]) expect(ops).toContain(op);
    const share = j.profile.ops.reduce((a: number, o: { share: number }) => a + o.share, 0);
    expect(share).toBeCloseTo(1, 3);
    const t = kiln("generate", "--model", model, "--prompt", "hello", "--max-tokens", "2", "--ctx", "64", "--profile");
    expect(t.code).toBe(0);
    expect(t.err).toMatch(/per-op profile of decoding: [\d.]+ ms\/token/);
    expect(t.err).toMatch(/\n  attention\s+[\d.]+\s+[\d.]+%\s+2\n/);
    const env = Bun.spawnSync([process.execPath, CLI, "generate", "--model", model, "--prompt", "hi", "--max-tokens", "2", "--ctx", "64"], { stderr: "pipe", env: { ...process.env, KILN_PROFILE: "1" } });
    expect(env.stderr.toString()).toContain("per-op profile of decoding");
  });

  test("profileDecode: per-token calls match the graph; the switch is off afterwards", async () => {
    const m = await loadModel(model, { threads: 2, contextLength: 64 });
    try {
      const p = profileDecode(m.defaultContext, [1, 2, 3, 4], 5);
      expect(p.tokens).toBe(5);
      expect(p.context).toBe(5);
      const calls = Object.fromEntries(p.ops.map((o) => [o.op, o.calls]));
      expect(calls.attention).toBe(m.hp.nLayer);
      expect(calls["output head"]).toBe(1);
      // One fused call per layer: the three projections share a type here, read in place
      // (kiln_matmul3) or all from packed copies (LoadOptions.packLayers: kiln_matmul3_packed).
      expect(calls["matmul attn q/k/v"]).toBe(m.hp.nLayer);
      expect(m.defaultContext.profiling).toBe(false);
      expect(formatProfile(p)).toContain("average of 5 tokens at context 5");
      expect(() => profileDecode(m.defaultContext, Array(60).fill(1), 8)).toThrow(/exceed the context length 64/);
    } finally {
      m.dispose();
    }
  });
});
