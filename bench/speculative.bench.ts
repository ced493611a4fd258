/**
 * Plain vs speculative decoding on the real model, same run, interleaved, medians:
 *
 *   bun bench/speculative.bench.ts [--model PATH] [--threads N] [--tokens N] [--reps N]
 *
 * Prompts: input-grounded (repeat / edit a given passage, where prompt lookup shines) and open
 * continuation (where it has nothing to copy). Per drafter: effective tokens/s, speed-up over
 * plain decoding, acceptance rate, tokens per target forward, draft time share (medians over the
 * reps) — and a check
 * that the tokens are identical to plain greedy decoding. JSON in bench/results/.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadModel } from "../src/runtime/model";

const { values: o } = parseArgs({ options: { model: { type: "string" }, threads: { type: "string" }, tokens: { type: "string" }, reps: { type: "string" } } });
const path = o.model ?? join(import.meta.dir, "..", "models", "gemma-3-270m-Q4_K_M.gguf");
const maxTokens = Number(o.tokens ?? 96);
const reps = Number(o.reps ?? 3);
const model = await loadModel(path, { threads: Number(o.threads ?? 2), contextLength: 1024, device: "cpu" });

const passage = "The Rhine rises in the Swiss Alps and flows north through Lake Constance, then west along the German-Swiss border to Basel, where it turns north again. It forms part of the border between France and Germany before passing through the Rhine Gorge, famous for its castles and vineyards, and finally reaches the North Sea in the Netherlands.";
const chat = (msg: string) => `<start_of_turn>user\n${msg}<end_of_turn>\n<start_of_turn>model\n`;
const code = "function add(a, b) {\n  return a + b;\n}\n\nfunction subtract(a, b) {\n  return a - b;\n}\n\nfunction multiply(a, b) {\n  return a * b;\n}\n";
const prompts: Record<string, string> = {
  // Input-grounded: the answer copies most of the given text. (The 270M model does not follow
  // "repeat exactly" — its answer is not a copy — so that prompt shows a miss, honestly.)
  "repeat a passage": chat(`Repeat the following text exactly, word for word:\n\n${passage}`),
  "edit a passage": chat(`Rewrite the following text, replacing "Rhine" with "river" and changing nothing else:\n\n${passage}`),
  "replace a word": chat(`Rewrite the following text with "Germany" replaced by "Deutschland":\n\n${passage}`),
  "summarise a passage": chat(`Summarise the following text in two sentences:\n\n${passage}`),
  "edit code": chat(`Add a divide function to this JavaScript code and return the whole file:\n\n${code}`),
  "open continuation": "Once upon a time, in a small village at the edge of a great forest, there lived",
};
const drafters = [
  { name: "prompt-lookup", spec: { draft: "prompt-lookup" as const, maxDraft: 10 } },
  { name: "prompt-lookup, fixed depth", spec: { draft: "prompt-lookup" as const, maxDraft: 10, adaptive: false } },
  { name: "layer-skip (12 of 18 layers)", spec: { draft: "layer-skip" as const, maxDraft: 4, draftLayers: 12 } },
  { name: "layer-skip, fixed depth", spec: { draft: "layer-skip" as const, maxDraft: 4, draftLayers: 12, adaptive: false } },
];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const rows: Record<string, unknown>[] = [];
for (const [kind, prompt] of Object.entries(prompts)) {
  const plainTps: number[] = [];
  // Per rep; the report gives the medians (one rep's stats can be one noisy planner's).
  const specRuns = drafters.map(() => ({ tps: [] as number[], acc: [] as number[], tpf: [] as number[], share: [] as number[], same: true, breakEven: [] as number[], drafting: [] as number[], steps: [] as number[] }));
  for (let r = 0; r < reps; r++) {
    const plain = await model.complete(prompt, { maxTokens, temperature: 0, speculative: false });
    plainTps.push(plain.timings.generatedTokensPerSecond);
    for (const [i, d] of drafters.entries()) {
      const s = await model.complete(prompt, { maxTokens, temperature: 0, speculative: d.spec });
      const run = specRuns[i]!;
      run.tps.push(s.timings.generatedTokensPerSecond);
      run.acc.push(s.speculative!.acceptanceRate);
      run.tpf.push(s.speculative!.tokensPerTargetForward);
      run.share.push(s.speculative!.draftTimeShare);
      if (s.speculative!.breakEvenAcceptance !== null) run.breakEven.push(s.speculative!.breakEvenAcceptance);
      run.drafting.push(s.speculative!.draftingSteps);
      run.steps.push(s.speculative!.steps);
      run.same &&= s.tokens.join() === plain.tokens.join();
    }
  }
  const base = median(plainTps);
  console.log(`${kind}: plain ${base.toFixed(1)} tok/s`);
  for (const [i, d] of drafters.entries()) {
    const r = specRuns[i]!;
    const run = { acc: median(r.acc), tpf: median(r.tpf), share: median(r.share), breakEven: r.breakEven.length ? median(r.breakEven) : null, drafting: median(r.drafting), steps: median(r.steps), same: r.same };
    const tps = median(r.tps);
    console.log(`  ${d.name.padEnd(28)} ${tps.toFixed(1)} tok/s (${(tps / base).toFixed(2)}×), acceptance ${(run.acc * 100).toFixed(0)}%, ${run.tpf.toFixed(2)} tokens/forward, draft ${(run.share * 100).toFixed(0)}% of time, drafted in ${run.drafting}/${run.steps} steps, break-even acceptance ${run.breakEven === null ? "-" : `${(run.breakEven * 100).toFixed(0)}%`}, identical: ${run.same}`);
    rows.push({ prompt: kind, drafter: d.name, plainTokS: base, specTokS: tps, speedup: tps / base, acceptanceRate: run.acc, tokensPerTargetForward: run.tpf, draftTimeShare: run.share, draftingSteps: run.drafting, steps: run.steps, breakEvenAcceptance: run.breakEven, identicalToPlain: run.same });
  }
}
model.dispose();
const dir = join(import.meta.dir, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `speculative-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), model: path, maxTokens, rows }, null, 2));
console.log(`wrote ${file}`);
