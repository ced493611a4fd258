/**
 * JSON-schema constrained decoding: the cost of the token mask, and decode speed with it.
 *
 *   bun bench/constrained.bench.ts [--threads N] [--tokens N] [--reps N]
 *
 * 1. Per-token `mask` time (mean, p50, p99, max) on the SmolLM2 (49,152) and Gemma 3 (262,144)
 *    vocabularies, replaying the tokens of sample outputs for a few schemas: "cold" is the first
 *    pass over a fresh grammar (trie walks), "warm" a second pass (memoized masks), as in a
 *    server that reuses one compiled schema.
 * 2. Greedy decode tokens/s with and without the constraint on both models (same prompt,
 *    interleaved reps, medians); the constrained loop includes mask + accept on every token.
 */
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { TokenConstraint, tokenTrie } from "../src/chat/constrain";
import { compileJsonSchema, type JsonSchema } from "../src/chat/json-schema";
import { loadModel, type Model } from "../src/runtime/model";

const { values: o } = parseArgs({ options: { threads: { type: "string" }, tokens: { type: "string" }, reps: { type: "string" } } });
const threads = Number(o.threads ?? 2);
const maxTokens = Number(o.tokens ?? 48);
const reps = Number(o.reps ?? 3);
console.log(`CPU: ${cpus()[0]?.model ?? "?"} (${cpus().length} logical), threads ${threads}`);

const SCHEMAS: Record<string, [JsonSchema, string]> = {
  person: [
    { type: "object", properties: { name: { type: "string" }, age: { type: "integer", minimum: 0, maximum: 150 }, email: { type: ["string", "null"] } }, required: ["name", "age"] },
    '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.com"}',
  ],
  "list of enums": [{ type: "array", items: { enum: ["red", "green", "blue"] }, maxItems: 8 }, '["red", "blue", "green", "red"]'],
  "any JSON": [true, '{"items": [{"id": 1, "tags": ["a", "b"], "price": 12.5}, {"id": 2, "ok": true, "note": null}]}'],
  "bounded strings": [{ type: "array", items: { type: "string", maxLength: 24 } }, '["a short one", "another string here", "x"]'],
};

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `mean ${(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3)}  p50 ${q(0.5).toFixed(3)}  p99 ${q(0.99).toFixed(3)}  max ${s[s.length - 1]!.toFixed(3)} ms (n=${xs.length})`;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function argmax(l: Float32Array): number {
  let best = 0;
  for (let t = 1; t < l.length; t++) if (l[t]! > l[best]!) best = t;
  return best;
}

/** Greedy decode of up to maxTokens; returns tokens/s (decode only) and the mask times. */
function generate(model: Model, prompt: string, schema: JsonSchema | null): { tps: number; n: number; text: string; maskMs: number[] } {
  const tok = model.tokenizer;
  const c = schema === null ? null : new TokenConstraint(compileJsonSchema(schema), tok);
  const ctx = model.createContext();
  let logits = ctx.eval(tok.encode(prompt, { parseSpecial: true, addSpecial: true })).f32;
  const out: number[] = [];
  const maskMs: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < maxTokens; i++) {
    const l = logits.subarray(logits.length - tok.vocabSize);
    if (c) {
      const m0 = performance.now();
      c.mask(l);
      maskMs.push(performance.now() - m0);
    }
    const t = argmax(l);
    if (tok.isEog(t)) break;
    c?.accept(t);
    out.push(t);
    if (c && !c.canContinue) break;
    logits = ctx.eval([t]).f32;
  }
  const s = (performance.now() - t0) / 1000;
  ctx.dispose();
  return { tps: out.length / s, n: out.length, text: tok.decode(out), maskMs };
}

const models = join(import.meta.dir, "..", "models");
const RUNS = [
  { file: "SmolLM2-135M-Instruct.Q4_1.gguf", prompt: (m: string) => `<|im_start|>user\n${m}<|im_end|>\n<|im_start|>assistant\n` },
  { file: "gemma-3-270m-Q4_K_M.gguf", prompt: (m: string) => `<start_of_turn>user\n${m}<end_of_turn>\n<start_of_turn>model\n` },
];

for (const run of RUNS) {
  const model = await loadModel(join(models, run.file), { threads, contextLength: 512, device: "cpu" });
  const tok = model.tokenizer;
  let t0 = performance.now();
  tokenTrie(tok);
  console.log(`\n${run.file}: vocabulary ${tok.vocabSize}, token trie built in ${(performance.now() - t0).toFixed(0)} ms`);

  console.log("mask time replaying sample outputs:");
  for (const [name, [schema, text]] of Object.entries(SCHEMAS)) {
    t0 = performance.now();
    const g = compileJsonSchema(schema);
    const compileMs = performance.now() - t0;
    const logits = new Float32Array(tok.vocabSize);
    const ids = tok.encode(text);
    const pass = () => {
      const c = new TokenConstraint(g, tok);
      const ms: number[] = [];
      for (const id of ids) {
        logits.fill(0);
        const m0 = performance.now();
        c.mask(logits);
        ms.push(performance.now() - m0);
        c.accept(id);
      }
      return ms;
    };
    const cold = pass();
    const warm: number[] = [];
    for (let r = 0; r < 20; r++) warm.push(...pass());
    console.log(`  ${name.padEnd(16)} compile ${compileMs.toFixed(2)} ms\n    cold: ${stats(cold)}\n    warm: ${stats(warm)}`);
  }

  const prompt = run.prompt("Describe a fictional person as a JSON object with a name, an age and an email address.");
  const schema = SCHEMAS.person![0];
  generate(model, prompt, null); // warm-up
  generate(model, prompt, schema); // warm-up (compiles the masks of this schema's states once)
  const plain: number[] = [], constrained: number[] = [];
  const masks: number[] = [];
  let sample = "";
  for (let r = 0; r < reps; r++) {
    plain.push(generate(model, prompt, null).tps);
    const c = generate(model, prompt, schema);
    constrained.push(c.tps);
    masks.push(...c.maskMs);
    sample = `${c.text} (${c.n} tokens)`;
  }
  const p = median(plain), c = median(constrained);
  console.log(`greedy decode: unconstrained ${p.toFixed(1)} tok/s, constrained ${c.toFixed(1)} tok/s, ratio ${(c / p).toFixed(3)}`);
  console.log(`  mask during generation: ${stats(masks)}`);
  console.log(`  constrained output: ${sample}`);
  model.dispose();
}
