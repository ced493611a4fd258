/**
 * Chat sessions on the real instruction-tuned model (SmolLM2-135M-Instruct Q4_1, ChatML):
 * factual answers, no control tokens in text, the second turn evaluates only the new tokens,
 * a conversation that outgrows the context drops its oldest turns instead of failing, and a
 * model without a template needs one named.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { KilnError } from "../../src/errors";
import { loadModel, type Model } from "../../src/runtime/model";

const models = join(import.meta.dir, "..", "..", "models");
const smol = join(models, "SmolLM2-135M-Instruct.Q4_1.gguf");
const gemma = join(models, "gemma-3-270m-Q4_K_M.gguf");
const have = existsSync(smol) && existsSync(gemma);
if (!have) console.warn("session.test.ts: the real models are missing (run scripts/setup.sh); skipped");
const greedy = { temperature: 0, maxTokens: 48 };

describe.skipIf(!have)("chat sessions (SmolLM2-135M-Instruct)", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(smol, { contextLength: 1024 });
  });
  afterAll(() => model?.dispose());

  test("answers factual questions, with no control tokens in the text; the second turn evaluates only new tokens", async () => {
    using session = model.createChatSession();
    const first = await session.prompt("Name the capital of France.", greedy);
    expect(first.text).toContain("Paris");
    expect(first.finishReason).toBe("eos");
    const second = await session.prompt("What is the capital of Germany?", greedy);
    expect(second.text).toContain("Berlin");
    for (const r of [first, second]) expect(r.text).not.toMatch(/<\|im_(start|end)\|>|<\|endoftext\|>/);
    // The whole conversation so far, rendered and tokenized, against what this turn evaluated.
    const all = model.tokenize(model.applyChatTemplate(session.history.slice(0, -1)), { parseSpecial: true });
    expect(second.timings.cachedTokens).toBeGreaterThan(first.timings.promptTokens);
    expect(second.timings.promptTokens).toBeLessThan(all.length / 2);
    expect(second.timings.promptTokens + second.timings.cachedTokens).toBe(all.length);
    expect(session.history.map((m) => m.role)).toEqual(["system", "user", "assistant", "user", "assistant"].slice(session.history[0]!.role === "system" ? 0 : 1));
  });

  test("a system prompt is the first message; reset keeps it and clears the cache", async () => {
    using session = model.createChatSession({ systemPrompt: "You answer in one short sentence." });
    await session.prompt("Name a primary color.", greedy);
    expect(session.history[0]).toEqual({ role: "system", content: "You answer in one short sentence." });
    session.reset();
    expect(session.history).toEqual([{ role: "system", content: "You answer in one short sentence." }]);
    expect(session.context.nPast).toBe(0);
  });

  test("a session can continue from earlier turns (history); bad history is a clear error", async () => {
    using session = model.createChatSession({ history: [{ role: "user", content: "My name is Ada." }, { role: "assistant", content: "Nice to meet you, Ada." }] });
    const r = await session.prompt("What is my name?", greedy);
    // The earlier turns were part of what this turn evaluated (a 135M model may still not use them).
    expect(model.detokenize(session.context.tokens)).toContain("<|im_start|>user\nMy name is Ada.<|im_end|>\n<|im_start|>assistant\nNice to meet you, Ada.<|im_end|>");
    expect(r.timings.cachedTokens).toBe(0);
    expect(session.history.filter((m) => m.role !== "system").map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant"]);
    expect(() => model.createChatSession({ history: [{ role: "system", content: "x" }] })).toThrow(/systemPrompt/);
  });

  test("a conversation that outgrows the context drops its oldest turns, never failing mid-reply", async () => {
    using session = model.createChatSession({ contextLength: 256 });
    let dropped = 0;
    for (const q of ["Tell me about the sea.", "Tell me about mountains.", "Tell me about forests.", "Tell me about deserts."]) {
      const r = await session.prompt(q, { temperature: 0, maxTokens: 60 });
      expect(r.text.length).toBeGreaterThan(0);
      dropped += r.droppedMessages;
    }
    expect(dropped).toBeGreaterThan(0);
    expect(session.history.at(-2)).toEqual({ role: "user", content: "Tell me about deserts." });
  }, 30_000);

  test("prompt lookup speculation works in sessions and changes no token", async () => {
    const a = model.createChatSession();
    const b = model.createChatSession();
    try {
      const q = "Repeat exactly: the quick brown fox jumps over the lazy dog.";
      const plain = await a.prompt(q, { ...greedy, speculative: false });
      const spec = await b.prompt(q, { ...greedy, speculative: { draft: "prompt-lookup", maxDraft: 8 } });
      expect(spec.tokens).toEqual(plain.tokens);
      expect(spec.speculative?.drafter).toBe("prompt-lookup");
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});

describe.skipIf(!have)("chat templates on a model without one (Gemma 3 270M base)", () => {
  test("a clear error unless a template is named; a built-in renders Gemma's turns", async () => {
    const m = await loadModel(gemma, { contextLength: 256 });
    try {
      let err: unknown;
      try {
        m.createChatSession();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KilnError);
      expect((err as KilnError).code).toBe("CHAT_TEMPLATE");
      expect((err as Error).message).toContain("gemma-3-270m-Q4_K_M.gguf has no chat template");
      const text = m.applyChatTemplate([{ role: "user", content: "Hi" }], { chatTemplate: "gemma" });
      expect(text).toBe("<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
      using s = m.createChatSession({ chatTemplate: "gemma" });
      const r = await s.prompt("Hi", { temperature: 0, maxTokens: 8 });
      expect(r.text).not.toContain("<start_of_turn>");
      // BOS comes from the template's {{ bos_token }}: the prompt starts with exactly one.
      expect(s.context.tokens.filter((t) => t === m.tokenizer.bos).length).toBe(1);
    } finally {
      m.dispose();
    }
  });
});
