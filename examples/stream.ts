/**
 * Streaming generation from the default model (Gemma 3 270M, a base model: it continues text),
 * printed piece by piece as it is generated, then the prompt and decode speed in tokens/s.
 *
 *   bun examples/stream.ts ["your prompt"] [--small] [--threads N]
 *
 * --small: 16 tokens instead of 128 (what test/examples runs).
 */
import { loadModel } from "../src/index";
import { GEMMA, positional, requireModel, small, threads } from "./common";

const prompt = positional[0] ?? "The three most important inventions of the industrial revolution were";
const maxTokens = small ? 16 : 128;

const model = await loadModel(requireModel(GEMMA), { contextLength: 1024, threads });
console.log(`Gemma 3 270M: ${model.nLayer} layers, loaded in ${model.loadMs.toFixed(0)} ms\n`);
process.stdout.write(prompt);

// generate() is an async generator: each piece is the text one step completed; its return value
// (reached when the loop ends) is the whole result with timings.
const pieces = model.generate(prompt, { maxTokens, temperature: 0.7, topP: 0.95, seed: 1 });
let next = await pieces.next();
while (!next.done) {
  process.stdout.write(next.value.text);
  next = await pieces.next();
}
const { timings, finishReason } = next.value;
console.log(`\n\nprompt: ${timings.promptTokens} tokens in ${timings.promptMs.toFixed(0)} ms (${timings.promptTokensPerSecond.toFixed(1)} tok/s)`);
console.log(`decode: ${timings.generatedTokens} tokens in ${timings.generateMs.toFixed(0)} ms (${timings.generatedTokensPerSecond.toFixed(1)} tok/s), finish reason: ${finishReason}`);
model.dispose();
