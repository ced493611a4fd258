#!/usr/bin/env bun
/**
 * CI's performance regression check: a short benchmark (Gemma 3 270M Q4_K_M and the synthetic
 * TinyLlama-shape Q4_0, prompts of 128 and 512 tokens, 16 decode tokens, 3 reps, kiln and
 * llama.cpp interleaved) whose decode_ratio and prefill_ratio (kiln ÷ llama.cpp) are compared with
 * bench/baseline.json's baseline for this machine's kind (bench/regress.ts machineKind). Exit 1,
 * naming model, figure, baseline and measured values, only on a large regression (below the
 * baseline's threshold, 0.6×) in two runs: a model below a floor is measured again and fails only
 * if it is below it again (regress.ts confirmFindings). A machine kind without a baseline is
 * reported and passes.
 * Makes the synthetic model if it is missing. --update-baseline writes this kind's entry.
 *
 *   bun bench/ci-check.ts [--threads N] [--reps N] [--baseline FILE] [--update-baseline]
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { cpuInfo } from "../src/ffi/library";
import { baselineFrom, checkBaselineFile, compareToBaseline, confirmFindings, machineKind } from "./regress";
import { BenchError, GEMMA, ensureSynthetic, parsePositive, runSuite, type SuiteOptions } from "./suite";

const BASELINE = join(import.meta.dir, "baseline.json");

// Wait at most 15 s per measurement for other processes' load to pass (CI time stays bounded).
process.env.KILN_BENCH_QUIET_WAIT_MS ??= "15000";

async function main(argv: string[]): Promise<number> {
  const log = (s: string) => process.stderr.write(s + "\n");
  const { values: v } = parseArgs({ args: argv, options: { threads: { type: "string" }, reps: { type: "string" }, baseline: { type: "string" }, "update-baseline": { type: "boolean" } } });
  const threads = parsePositive(v.threads, "threads") ?? 2;
  const reps = parsePositive(v.reps, "reps") ?? 3;
  const baselinePath = v.baseline ?? BASELINE;
  if (!existsSync(GEMMA)) throw new BenchError(`${GEMMA} is missing; run \`bash scripts/setup.sh\` first`);
  const tiny = await ensureSynthetic("tinyllama-q4_0.gguf", log);
  const suite: SuiteOptions = {
    models: [GEMMA, tiny].map((path) => ({ path, prompts: [128, 512], decode: 16, reps, notes: [] })),
    threads,
    batch: 512,
    quick: true,
    profile: false,
    long: null,
    bandwidthBytes: 256 * 2 ** 20,
    log,
  };
  const result = await runSuite(suite);
  const dir = join(import.meta.dir, "results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "ci-latest.json"), JSON.stringify(result, null, 2));
  const kind = machineKind(result.machine.cpu, cpuInfo().features);
  log(`bench-ci: machine kind ${kind} (${result.machine.cpu}, kiln ${result.machine.kiln_cpu_level}${result.machine.amx ? `, AMX ${result.machine.amx}` : ""})`);
  const file = existsSync(baselinePath) ? checkBaselineFile(JSON.parse(readFileSync(baselinePath, "utf8")), baselinePath) : { kinds: {} };
  if (v["update-baseline"]) {
    file.kinds[kind] = baselineFrom(result, `kiln bench CI check (bun bench/ci-check.ts): ${result.machine.cpu}, ${result.machine.cores} cores, ${threads} threads, ${reps} reps, measured ${result.date}`);
    writeFileSync(baselinePath, JSON.stringify(file, null, 2) + "\n");
    log(`wrote the ${kind} baseline in ${baselinePath}`);
    return 0;
  }
  const baseline = file.kinds[kind];
  if (!baseline) {
    for (const m of result.models) log(`bench-ci: ${m.model}: decode_ratio ${m.decode_ratio?.toFixed(2)}, prefill_ratio ${m.prefill_ratio?.toFixed(2)} (recorded)`);
    console.error(`bench-ci: passed: no baseline for machine kind ${kind} in ${baselinePath}; figures recorded in bench/results/ci-latest.json, not compared (add one with --update-baseline)`);
    return 0;
  }
  let findings = compareToBaseline(result, baseline);
  const below = [...new Set(findings.filter((f) => !f.ok).map((f) => f.model))];
  if (below.length) {
    // Confirm before failing: measure the models below a floor again (regress.ts confirmFindings).
    for (const f of findings.filter((x) => !x.ok)) log(`bench-ci: ${f.message}: measuring ${f.model} again to confirm`);
    const again = await runSuite({ ...suite, models: suite.models.filter((m) => below.some((b) => m.path.endsWith(`/${b}`))) });
    writeFileSync(join(dir, "ci-confirm.json"), JSON.stringify(again, null, 2));
    findings = confirmFindings(findings, compareToBaseline(again, { ...baseline, models: Object.fromEntries(below.map((b) => [b, baseline.models[b]!])) }));
  }
  for (const f of findings) log(`bench-ci: ${f.message}`);
  const bad = findings.filter((f) => !f.ok);
  if (bad.length) {
    console.error(`bench-ci: FAILED: ${bad.length} large regression(s) of kiln ÷ llama.cpp against ${baselinePath}`);
    return 1;
  }
  console.error(`bench-ci: passed (${findings.length} ratios within ${baseline.threshold}× of the baseline; ${result.wall_s.toFixed(0)} s)`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`bench-ci: ${e instanceof BenchError ? e.message : (e as Error).stack}`);
    process.exit(1);
  },
);
