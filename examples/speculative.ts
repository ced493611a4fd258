/**
 * Speculative decoding with prompt lookup on a copy-heavy task (rewrite a passage with one word
 * replaced: most of the answer repeats the prompt), against plain decoding, on Gemma 3 270M.
 * Prompt lookup drafts the tokens that followed the last few generated tokens where they occur
 * earlier in the context, and the model verifies all drafts in one batched forward call. Greedy
 * output is identical either way (checked here); only the number of forward calls changes.
 *
 *   bun examples/speculative.ts [--small] [--threads N]
 *
 * Prints the speed of both, the speed-up, the acceptance rate, tokens per forward call, and
 * whether the outputs are identical. --small: 24 tokens instead of 96 (what test/examples runs).
 */
import { loadModel } from "../src/index";
import { GEMMA, requireModel, small, threads } from "./common";

const maxTokens = small ? 24 : 96;
const passage = "The Rhine rises in the Swiss Alps and flows north through Lake Constance, then west along the German-Swiss border to Basel, where it turns north again. It forms part of the border between France and Germany before passing through the Rhine Gorge, famous for its castles and vineyards, and finally reaches the North Sea in the Netherlands.";

const model = await loadModel(requireModel(GEMMA), { threads, contextLength: 1024 });
const prompt = model.applyChatTemplate([{ role: "user", content: `Rewrite the following text, replacing "Rhine" with "river" and changing nothing else:\n\n${passage}` }], { chatTemplate: "gemma" });

// A short warm-up, so that neither measured run pays for first-touch page faults of the weights.
await model.complete(prompt, { maxTokens: 2, temperature: 0, speculative: false });

const plain = await model.complete(prompt, { maxTokens, temperature: 0, speculative: false });
const spec = await model.complete(prompt, { maxTokens, temperature: 0, speculative: { draft: "prompt-lookup", maxDraft: 10 } });
const stats = spec.speculative;
if (!stats) throw new Error("the speculative run returned no speculative stats");

console.log(`prompt: ${plain.timings.promptTokens} tokens; ${maxTokens} tokens generated greedily\n`);
console.log(`output: ${spec.text.trim()}\n`);
console.log(`plain decoding:        ${plain.timings.generatedTokensPerSecond.toFixed(1)} tok/s (${plain.timings.generatedTokens} tokens, one forward call each)`);
console.log(`prompt-lookup drafts:  ${spec.timings.generatedTokensPerSecond.toFixed(1)} tok/s (${spec.timings.generatedTokens} tokens, ${stats.steps} forward calls after the prompt)`);
console.log(`speed-up: ${(spec.timings.generatedTokensPerSecond / plain.timings.generatedTokensPerSecond).toFixed(2)}×`);
console.log(`acceptance: ${stats.accepted}/${stats.drafted} drafted tokens (${(stats.acceptanceRate * 100).toFixed(0)}%), ${stats.tokensPerTargetForward.toFixed(2)} tokens per forward call, drafted in ${stats.draftingSteps} of ${stats.steps} steps`);
const identical = spec.tokens.length === plain.tokens.length && spec.tokens.every((t, i) => t === plain.tokens[i]);
console.log(`identical: ${identical}`);
model.dispose();
if (!identical) throw new Error("speculative decoding changed the greedy output");
