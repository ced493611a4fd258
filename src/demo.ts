/**
 * The README's main command: generate text with the default model (Gemma 3 270M Q4_K_M, fetched
 * and sha256-verified by scripts/setup.sh), streaming it as it is produced, then the speed.
 *
 *   bun run demo [-- "your prompt"]
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadModel } from "./runtime/model";

const path = join(import.meta.dir, "..", "models", "gemma-3-270m-Q4_K_M.gguf");
if (!existsSync(path)) {
  console.error(`kiln demo: ${path} is missing; run \`bash scripts/setup.sh\` first`);
  process.exit(1);
}
const prompt = process.argv[2] ?? "The three most useful things to know about baking bread at home are";
const model = await loadModel(path, { contextLength: 1024 });
process.stdout.write(`[Gemma 3 270M Q4_K_M, ${model.hp.nLayer} layers, loaded in ${model.loadMs.toFixed(0)} ms]\n\n${prompt}`);
const it = model.generate(prompt, { maxTokens: 96, temperature: 0.7, topK: 40, topP: 0.95, seed: 42, repeatPenalty: 1.1 });
for (;;) {
  const r = await it.next();
  if (r.done) {
    const t = r.value.timings;
    console.log(`\n\n[${t.promptTokens} prompt tokens at ${t.promptTokensPerSecond.toFixed(0)} tok/s, ${t.generatedTokens} generated at ${t.generatedTokensPerSecond.toFixed(1)} tok/s; ${r.value.finishReason}]`);
    break;
  }
  process.stdout.write(r.value.text);
}
model.dispose();
