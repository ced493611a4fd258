/**
 * The README's main command: a streamed chat answer from the instruction-tuned model
 * (SmolLM2-135M-Instruct Q4_1, fetched and sha256-verified by scripts/setup.sh), then the speed.
 *
 *   bun run demo [-- "your question"]
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadModel } from "./runtime/model";

const path = join(import.meta.dir, "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
if (!existsSync(path)) {
  console.error(`kiln demo: ${path} is missing; run \`bash scripts/setup.sh\` first`);
  process.exit(1);
}
const question = process.argv[2] ?? "Give me three tips for baking bread at home.";
const model = await loadModel(path, { contextLength: 2048 });
const session = model.createChatSession();
process.stdout.write(`[SmolLM2-135M-Instruct Q4_1, ${model.hp.nLayer} layers, loaded in ${model.loadMs.toFixed(0)} ms]\n\n> ${question}\n\n`);
const it = session.promptStream(question, { maxTokens: 256, temperature: 0.7, topK: 40, topP: 0.95, seed: 42, repeatPenalty: 1.1 });
for (;;) {
  const r = await it.next();
  if (r.done) {
    const t = r.value.timings;
    console.log(`\n\n[${t.promptTokens} prompt tokens at ${t.promptTokensPerSecond.toFixed(0)} tok/s, ${t.generatedTokens} generated at ${t.generatedTokensPerSecond.toFixed(1)} tok/s; ${r.value.finishReason}]`);
    break;
  }
  process.stdout.write(r.value.text);
}
session.dispose();
model.dispose();
