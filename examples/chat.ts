/**
 * A chat session over several turns with the instruct model (SmolLM2-135M-Instruct, ChatML
 * template). Each turn re-renders the whole conversation with the chat template, but the
 * session's context keeps the tokens already in its KV cache: from the second turn on, only the
 * new user message (and the template's markup around it) is evaluated. The per-turn line shows
 * it: `cached` prompt tokens reused from the cache vs `evaluated` ones.
 *
 *   bun examples/chat.ts [--small] [--threads N]
 *
 * --small: replies of at most 12 tokens instead of 96 (what test/examples runs).
 */
import { loadModel } from "../src/index";
import { SMOLLM2, requireModel, small, threads } from "./common";

const turns = [
  "What is the capital of France?",
  "What river flows through it?",
  "Name one famous museum there.",
];
const maxTokens = small ? 12 : 96;

const model = await loadModel(requireModel(SMOLLM2), { threads });
const session = model.createChatSession({ systemPrompt: "You are a helpful assistant. Answer briefly.", contextLength: 2048 });

for (const [i, question] of turns.entries()) {
  console.log(`> ${question}`);
  const stream = session.promptStream(question, { maxTokens, temperature: 0 });
  let next = await stream.next();
  while (!next.done) {
    process.stdout.write(next.value.text);
    next = await stream.next();
  }
  const t = next.value.timings;
  console.log(`\n[turn ${i + 1}: ${t.cachedTokens} prompt tokens cached, ${t.promptTokens} evaluated in ${t.promptMs.toFixed(0)} ms; ${t.generatedTokens} generated at ${t.generatedTokensPerSecond.toFixed(1)} tok/s]\n`);
}

console.log(`history: ${session.history.length} messages (${session.history.map((m) => m.role).join(", ")})`);
session.dispose();
model.dispose();
