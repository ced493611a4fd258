/**
 * Structured output: the instruct model (SmolLM2-135M-Instruct) answers with JSON that matches a
 * JSON schema. Generation is constrained token by token (every token that would break the schema
 * is masked), so when the reply ends with finishReason "stop" the text always parses and matches
 * the schema — even from a 135M model. The parsed object is printed.
 *
 *   bun examples/json.ts [--small] [--threads N]
 *
 * --small changes nothing here: the schema already bounds the reply's length.
 */
import { loadModel, type JsonSchema } from "../src/index";
import { SMOLLM2, requireModel, threads } from "./common";

// Bounded strings and numbers keep the reply short: the constraint ends it when the object is complete.
const citySchema = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 24 },
    country: { type: "string", maxLength: 24 },
    population_millions: { type: "integer", minimum: 0, maximum: 100 },
    is_capital: { type: "boolean" },
    landmarks: { type: "array", items: { type: "string", maxLength: 24 }, minItems: 1, maxItems: 3 },
  },
  required: ["city", "country", "population_millions", "is_capital", "landmarks"],
  additionalProperties: false,
} satisfies JsonSchema;

const model = await loadModel(requireModel(SMOLLM2), { threads });
const session = model.createChatSession({ systemPrompt: "You answer with JSON only.", contextLength: 1024 });

// Extraction from a given text: what a small model does well (it copies facts instead of recalling them).
const text = "Paris is the capital of France. About 2 million people live in the city itself. Visitors come for the Eiffel Tower, the Louvre and Notre-Dame.";
const question = `Extract the city, country, population in millions, whether it is a capital, and the landmarks from this text as JSON.\n\n${text}`;
console.log(`> ${question}\n`);
const reply = await session.prompt(question, { jsonSchema: citySchema, temperature: 0, maxTokens: 160 });
console.log(`raw reply (${reply.timings.generatedTokens} tokens, finish reason ${reply.finishReason}):\n${reply.text}\n`);
if (reply.finishReason !== "stop") throw new Error(`the reply ended with "${reply.finishReason}" before the JSON value was complete`);

const city = JSON.parse(reply.text) as { city: string; country: string; population_millions: number; is_capital: boolean; landmarks: string[] };
console.log("parsed:", city);
console.log(`\n${city.city} (${city.country}): ${city.population_millions} million people, capital: ${city.is_capital}, landmarks: ${city.landmarks.join("; ")}`);

session.dispose();
model.dispose();
