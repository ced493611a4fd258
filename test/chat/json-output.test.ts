/**
 * jsonSchema / json on generate, complete and session.prompt with the real instruct model: every
 * reply parses and has the schema's shape across seeds and temperatures, generation stops when the
 * value is complete, a reply cut by maxTokens says "length", and speculation is refused.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadModel, type Model } from "../../src/runtime/model";

const MODEL = join(import.meta.dir, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const have = existsSync(MODEL);
if (!have) console.warn(`json-output.test.ts: ${MODEL} is missing (run scripts/setup.sh); skipped`);

const person = {
  type: "object",
  properties: { name: { type: "string", maxLength: 20 }, age: { type: "integer", minimum: 0, maximum: 130 }, tags: { type: "array", items: { enum: ["a", "b", "c"] }, maxItems: 3 } },
  required: ["name", "age", "tags"],
  additionalProperties: false,
};

describe.skipIf(!have)("JSON-constrained generation (SmolLM2-135M-Instruct)", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(MODEL, { contextLength: 1024 });
  });
  afterAll(() => model?.dispose());

  test("every reply parses and matches the schema, across seeds and temperatures; it stops when complete", async () => {
    for (const [temperature, seed] of [[0, 1], [0.7, 1], [1.0, 2], [1.3, 3]] as const) {
      using session = model.createChatSession();
      const r = await session.prompt("Describe a person as JSON.", { temperature, seed, maxTokens: 120, jsonSchema: person });
      expect({ temperature, finishReason: r.finishReason }).toEqual({ temperature, finishReason: "stop" });
      const v = JSON.parse(r.text);
      expect(Object.keys(v).sort()).toEqual(["age", "name", "tags"]);
      expect(typeof v.name).toBe("string");
      expect(v.name.length).toBeLessThanOrEqual(20);
      expect(Number.isInteger(v.age) && v.age >= 0 && v.age <= 130).toBe(true);
      expect(Array.isArray(v.tags) && v.tags.length <= 3 && v.tags.every((t: string) => ["a", "b", "c"].includes(t))).toBe(true);
    }
  });

  test("json: true gives any JSON value; a reply cut by maxTokens says length and is not a value", async () => {
    const r = await model.complete(model.applyChatTemplate([{ role: "user", content: "Give me a JSON list of three colors." }]), { temperature: 0, maxTokens: 60, json: true });
    if (r.finishReason === "stop") expect(() => JSON.parse(r.text)).not.toThrow();
    const cut = await model.complete("Describe a person as JSON:", { temperature: 0, maxTokens: 4, jsonSchema: person });
    expect(cut.finishReason).toBe("length");
    expect(() => JSON.parse(cut.text)).toThrow();
  });

  test("speculation with a schema, and unsupported keywords, are clear errors", async () => {
    await expect(model.complete("x", { jsonSchema: person, speculative: { draft: "prompt-lookup" } })).rejects.toThrow(/not available with jsonSchema/);
    await expect(model.complete("x", { jsonSchema: { type: "string", pattern: "a+" } })).rejects.toThrow(/pattern/);
  });
});
