/** The markdown report, the chart from a results file, the targets, and the report CLI. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { missBy, readResults, renderChart, renderReport, targets } from "../../bench/report";
import { suiteResult } from "./fixture";

const dir = mkdtempSync(join(tmpdir(), "kiln-report-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const REPORT = join(import.meta.dir, "..", "..", "bench", "report.ts");

describe("report", () => {
  test("summary, targets, roofline, long context, per-model tables and profile", () => {
    const md = renderReport(suiteResult(), { chartPath: "perf-context.svg" });
    expect(md).toContain("# kiln vs llama.cpp: benchmark report");
    expect(md).toContain("| gemma-3-270m-Q4_K_M.gguf | 120.0 | 70.0 | 1.71× | 950.0 (512) | 1000.0 | 0.95× | 380 / 570 |");
    expect(md).toContain("| tinyllama-q4_0.gguf | 60.0 | 50.0 | 1.20× | 150.0 (512) | 290.0 | 0.52× | 660 / 1290 |");
    expect(md).toContain("![tokens/s vs context length, kiln vs llama.cpp](perf-context.svg)");
    expect(md).toContain("## Long context (tinyllama-q4_0-ctx32k.gguf)");
    expect(md).toMatch(/\| 16K \| [\d.]+ \| skipped \| [\d.]+ \| [\d.]+ \|/);
    expect(md).toContain("- 16K kiln naive: worker failed, killed by SIGTERM");
    expect(md).toContain("| decode, short context (tok/s) | 60.0 | 50.0 | 1.20× |");
    expect(md).toContain("| peak RSS (MiB) | 660 | 1290 | 0.51× |");
    expect(md).toContain("| ffn gate+up | 8.000 | 50% | 22 |");
    expect(md).toContain("Note: a note.");
    expect(md).not.toMatch(/\n{3}/);
  });

  test("targets: met, and missed by how much", () => {
    const t = targets(suiteResult());
    const gemmaDecode = t.find((x) => x.model.startsWith("gemma") && x.target.startsWith("decode ≥ goal"))!;
    expect(gemmaDecode.goal).toBe(1.1);
    expect(gemmaDecode.met).toBe(true);
    const tinyPrefill = t.find((x) => x.model === "tinyllama-q4_0.gguf" && x.target.startsWith("prefill"))!;
    expect(tinyPrefill.met).toBe(false);
    const rss = t.find((x) => x.model === "tinyllama-q4_0.gguf" && x.target.startsWith("peak RSS"))!;
    expect(rss.atMost).toBe(true);
    expect(rss.met).toBe(true);
    expect(t.some((x) => x.target.includes("16K context"))).toBe(true);
    const md = renderReport(suiteResult(), { chartPath: null });
    expect(md).toContain("| prefill (512 tokens) ≥ goal × llama.cpp | tinyllama-q4_0.gguf | ≥ 1.50× | 0.52× | missed by 66% |");
    // An Intel machine with AMX is held to 2× llama.cpp's prefill.
    const amx = suiteResult();
    amx.machine.kind = "intel-amx";
    expect(targets(amx).find((x) => x.model === "tinyllama-q4_0.gguf" && x.target.startsWith("prefill"))!.goal).toBe(2);
    expect(md).not.toContain("![");
  });

  test("a miss that rounds to the goal shows its size, never 'missed by 0'", () => {
    expect(missBy(6.4, "%")).toBe("6%");
    expect(missBy(0.3, "%")).toBe("0.3%");
    expect(missBy(-1.2, "point")).toBe("1 point");
    expect(missBy(0.31, "point")).toBe("0.3 points");
    expect(missBy(0.01, "point")).toBe("0.1 points");
    const r = suiteResult();
    const m = r.models.find((x) => x.model === "tinyllama-q4_0.gguf")!;
    m.roofline.short!.kiln_fraction = 0.847;
    const md = renderReport(r, { chartPath: null });
    expect(md).toContain("| decode ≥ 85% of the bandwidth roofline | tinyllama-q4_0.gguf | ≥ 85.0% | 84.7% | missed by 0.3 points |");
    expect(md).not.toContain("missed by 0 point");
  });

  test("chart: two panels, four series each; none without a long-context sweep", () => {
    const svg = renderChart(suiteResult())!;
    expect(svg).toContain(">Prefill<");
    expect(svg).toContain(">Decode<");
    for (const name of ["kiln (flash attention)", "kiln (naive attention)", "llama.cpp (flash attention)", "llama.cpp (no flash attention)"]) expect(svg).toContain(name);
    expect(svg).toContain(">16K<");
    expect(renderChart(suiteResult(false))).toBeNull();
  });

  test("readResults names the problem with a bad file", () => {
    expect(() => readResults(join(dir, "missing.json"))).toThrow(/no such results file/);
    writeFileSync(join(dir, "bad.json"), "{oops");
    expect(() => readResults(join(dir, "bad.json"))).toThrow(/not JSON/);
    writeFileSync(join(dir, "other.json"), JSON.stringify({ kind: "something" }));
    expect(() => readResults(join(dir, "other.json"))).toThrow(/not a kiln bench results file/);
  });

  test("bun bench/report.ts FILE --out --svg writes the page and the chart", () => {
    const input = join(dir, "r.json");
    writeFileSync(input, JSON.stringify(suiteResult()));
    const p = Bun.spawnSync([process.execPath, REPORT, input, "--out", join(dir, "out", "perf.md"), "--svg", join(dir, "out", "c.svg")], { stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    expect(readFileSync(join(dir, "out", "perf.md"), "utf8")).toContain("![tokens/s vs context length, kiln vs llama.cpp](c.svg)");
    expect(existsSync(join(dir, "out", "c.svg"))).toBe(true);
    const bad = Bun.spawnSync([process.execPath, REPORT, join(dir, "nope.json")], { stderr: "pipe" });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toContain("nope.json: no such results file");
  });

  test("--docs: one page per machine kind, and an index that keeps the other kinds' figures", () => {
    const docs = join(dir, "docs");
    const run = (kind: string, decodeScale: number) => {
      const r = suiteResult();
      r.machine.kind = kind;
      r.machine.cpu = `CPU of ${kind}`;
      for (const m of r.models) m.decode_ratio *= decodeScale;
      const input = join(dir, `${kind}.json`);
      writeFileSync(input, JSON.stringify(r));
      const p = Bun.spawnSync([process.execPath, REPORT, input, "--docs"], { stderr: "pipe", env: { ...process.env, KILN_DOCS_DIR: docs } });
      expect(p.stderr.toString()).toContain(`performance/${kind}.md`);
      expect(p.exitCode).toBe(0);
    };
    run("amd-avx512", 1);
    let index = readFileSync(join(docs, "performance.md"), "utf8");
    expect(index).toContain("Run 2026");
    expect(index).toContain("CPU of amd-avx512");
    expect(index).toContain("| tinyllama-q4_0.gguf | 60.0 | 50.0 | 1.20× |");
    expect(index).toContain("[performance/amd-avx512.md](performance/amd-avx512.md)");
    expect(index).toContain("No suite run on such a machine yet"); // intel-amx has no page yet
    expect(readFileSync(join(docs, "performance", "amd-avx512.md"), "utf8")).toContain("# Performance on AMD EPYC");
    expect(existsSync(join(docs, "performance", "amd-avx512-context.svg"))).toBe(true);
    // A hand-added note on the run's conditions travels to the index.
    const page = join(docs, "performance", "amd-avx512.md");
    writeFileSync(page, readFileSync(page, "utf8").replace("\n## Summary\n", "\n- This run met a slow host: half the\n  usual bandwidth.\n\n## Summary\n"));
    run("intel-amx", 2);
    index = readFileSync(join(docs, "performance.md"), "utf8");
    expect(index).toContain("| tinyllama-q4_0.gguf | 60.0 | 50.0 | 1.20× |"); // the AMD figures stay
    expect(index).toContain("| tinyllama-q4_0.gguf | 60.0 | 50.0 | 2.40× |"); // the Intel run's
    expect(index).toContain("CPU of intel-amx");
    expect(index).not.toContain("No suite run on such a machine yet");
    expect(index).toContain("This run met a slow host: half the\nusual bandwidth.");
    expect(index).not.toMatch(/\n{3}/);
  });
});
