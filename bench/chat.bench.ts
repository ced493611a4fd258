/**
 * Second-turn time to first token in a chat session (the KV cache keeps the conversation, the
 * turn evaluates only its new tokens) against re-running the whole history in a fresh session.
 *
 *   bun bench/chat.bench.ts [--threads N] [--reps N] [--history-tokens 1000]
 *
 * For each real model (SmolLM2-135M-Instruct with its ChatML template; Gemma 3 270M with the
 * built-in "gemma" template): a conversation of ~--history-tokens tokens (user/assistant turns
 * of public-domain-style prose), then one user turn. "reuse": the session that already answered
 * the history's last turn gets the new one; "re-run": a fresh session seeded with the same
 * history gets it. Medians over --reps.
 */
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { ChatMessage } from "../src/chat/template";
import { loadModel } from "../src/runtime/model";

const { values: o } = parseArgs({ options: { threads: { type: "string" }, reps: { type: "string" }, "history-tokens": { type: "string" } } });
const threads = Number(o.threads ?? 2);
const reps = Number(o.reps ?? 5);
const target = Number(o["history-tokens"] ?? 1000);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const passage =
  "The canal was dug in the last century to carry coal from the valley to the port. Barges moved slowly between the locks, " +
  "pulled by horses along the towpath, and the keepers lived in small stone houses beside each gate. ";
const models = [
  { name: "SmolLM2-135M-Instruct Q4_1", file: "SmolLM2-135M-Instruct.Q4_1.gguf", chatTemplate: undefined },
  { name: "Gemma 3 270M Q4_K_M (gemma template)", file: "gemma-3-270m-Q4_K_M.gguf", chatTemplate: "gemma" },
];
console.log(`chat second turn: ${cpus()[0]?.model ?? "unknown CPU"}, ${threads} threads, ~${target}-token history, ${reps} reps (medians)`);
for (const m of models) {
  const model = await loadModel(join(import.meta.dir, "..", "models", m.file), { threads, contextLength: 2048, device: "cpu" });
  // Grow the history until it renders to ~target tokens.
  const history: ChatMessage[] = [];
  for (let i = 0; model.tokenize(model.applyChatTemplate(history.length ? history : [{ role: "user", content: "" }], { chatTemplate: m.chatTemplate })).length < target; i++) {
    history.push({ role: "user", content: `Tell me more about the canal, part ${i + 1}.` }, { role: "assistant", content: passage.repeat(2) });
  }
  const opts = { maxTokens: 1, temperature: 0 };
  const ttft = async (run: () => AsyncGenerator<unknown, unknown>) => {
    const t0 = performance.now();
    const it = run();
    await it.next();
    const ms = performance.now() - t0;
    await it.return(undefined);
    return ms;
  };
  const reuse: number[] = [];
  const rerun: number[] = [];
  let evaluated = { reuse: 0, rerun: 0 };
  for (let r = 0; r < reps; r++) {
    // The session answers the history's last user turn (so its cache holds the conversation)...
    const warm = model.createChatSession({ chatTemplate: m.chatTemplate, history: history.slice(0, -2) });
    await warm.prompt(history.at(-2)!.content, { maxTokens: 48, temperature: 0 });
    reuse.push(await ttft(() => warm.promptStream("Summarise the canal's story in one sentence.", opts)));
    evaluated.reuse = warm.context.nPast;
    const conversation = warm.history.filter((x) => x.role !== "system"); // a turn left by return() is not recorded
    warm.dispose();
    // ...against a fresh session given the same conversation, evaluating all of it.
    const fresh = model.createChatSession({ chatTemplate: m.chatTemplate, history: conversation });
    rerun.push(await ttft(() => fresh.promptStream("Summarise the canal's story in one sentence.", opts)));
    evaluated.rerun = fresh.context.nPast;
    fresh.dispose();
  }
  const histTokens = model.tokenize(model.applyChatTemplate(history, { chatTemplate: m.chatTemplate })).length;
  console.log(`${m.name}: history ${histTokens} tokens; second-turn TTFT reuse ${median(reuse).toFixed(1)} ms vs re-run ${median(rerun).toFixed(1)} ms: ${(median(rerun) / median(reuse)).toFixed(1)}× (context after: ${evaluated.reuse} / ${evaluated.rerun} tokens)`);
  model.dispose();
}
