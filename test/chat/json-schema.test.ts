/**
 * JSON-schema constrained decoding (src/chat/json-schema.ts, src/chat/constrain.ts):
 * - random walks: pick random allowed tokens until the value is complete and a random stop; every
 *   output parses and validates (a small validator of the subset below), on a synthetic byte-level
 *   BPE vocabulary and on the real SmolLM2 and Gemma 3 vocabularies;
 * - random schemas from the subset, same check;
 * - the trie-walk mask equals the brute-force mask (every token run through the grammar);
 * - a test with teeth: the same walk with a mask that allows every token produces invalid output;
 * - each unsupported keyword is UNSUPPORTED_SCHEMA naming it, malformed schemas BAD_SCHEMA;
 * - one greedy generation on SmolLM2 under a schema parses and validates.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TokenConstraint } from "../../src/chat/constrain";
import { compileJsonSchema, type JsonSchema } from "../../src/chat/json-schema";
import { KilnError } from "../../src/errors";
import { parseGGUF } from "../../src/gguf";
import { loadModel, type Model } from "../../src/runtime/model";
import { createTokenizer, type Tokenizer } from "../../src/tokenizer";
import { rng } from "../helpers";
import { bpeVocab } from "../tokenizer/fixtures";

// ---------------------------------------------------------------------------------------------
// A validator of the subset (independent of the grammar)
// ---------------------------------------------------------------------------------------------

type S = Record<string, unknown>;
function validate(v: unknown, s: JsonSchema, root: JsonSchema = s): boolean {
  if (s === true) return true;
  if (s === false) return false;
  if (typeof s.$ref === "string") {
    const [, kind, name] = s.$ref.split("/");
    return validate(v, ((root as S)[kind!] as S)[name!] as JsonSchema, root);
  }
  const any = (s.anyOf ?? s.oneOf) as JsonSchema[] | undefined;
  if (any) return any.some((x) => validate(v, x, root));
  const typeOk = (t: string) => {
    switch (t) {
      case "null": return v === null;
      case "boolean": return typeof v === "boolean";
      case "number": return typeof v === "number" && Number.isFinite(v);
      case "integer": return typeof v === "number" && Number.isInteger(v);
      case "string": return typeof v === "string";
      case "array": return Array.isArray(v);
      case "object": return typeof v === "object" && v !== null && !Array.isArray(v);
    }
    return false;
  };
  if (s.type !== undefined && !(Array.isArray(s.type) ? s.type : [s.type]).some(typeOk)) return false;
  if ("const" in s && JSON.stringify(v) !== JSON.stringify(s.const)) return false;
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) return false;
  if (typeof v === "string") {
    const n = [...v].length;
    if (typeof s.minLength === "number" && n < s.minLength) return false;
    if (typeof s.maxLength === "number" && n > s.maxLength) return false;
  }
  if (typeof v === "number") {
    if (typeof s.minimum === "number" && v < s.minimum) return false;
    if (typeof s.maximum === "number" && v > s.maximum) return false;
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === "number" && v.length < s.minItems) return false;
    if (typeof s.maxItems === "number" && v.length > s.maxItems) return false;
    if (s.items !== undefined && !v.every((x) => validate(x, s.items as JsonSchema, root))) return false;
  }
  if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    const o = v as S;
    for (const r of (s.required as string[]) ?? []) if (!(r in o)) return false;
    const props = s.properties as S | undefined;
    for (const [k, x] of Object.entries(o)) {
      if (props && k in props) {
        if (!validate(x, props[k] as JsonSchema, root)) return false;
      } else if (props || s.additionalProperties === false) return false; // kiln: only listed properties
      else if (s.additionalProperties !== undefined && !validate(x, s.additionalProperties as JsonSchema, root)) return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Random walks
// ---------------------------------------------------------------------------------------------

const CLOSERS = new Set([0x22, 0x5d, 0x7d]); // " ] }
const fatal = new TextDecoder("utf-8", { fatal: true });

/**
 * Random allowed tokens until the value is complete and a coin says stop (or nothing may
 * follow). Half of the picks prefer tokens holding a closing byte, so strings and containers end.
 * `allowed` can be replaced by a wrong mask for the teeth test.
 */
function walk(tok: Tokenizer, c: TokenConstraint, seed: number, allowed = () => c.allowedTokens(), maxSteps = 400): string {
  const r = rng(seed);
  const bytes: number[] = [];
  for (let step = 0; step < maxSteps; step++) {
    if (c.complete && (!c.canContinue || r() < 0.3)) break;
    const ids = [...allowed()].filter((id) => !tok.isEog(id));
    if (ids.length === 0) break;
    const closing = r() < 0.5 ? ids.filter((id) => tok.tokenToPiece(id, false).some((b) => CLOSERS.has(b))) : [];
    const from = closing.length ? closing : ids;
    const id = from[Math.floor(r() * from.length)]!;
    try {
      c.accept(id);
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
      // A wrong mask offered it; keep the bytes (they show up as invalid output) and carry on.
    }
    bytes.push(...tok.tokenToPiece(id, false));
  }
  return fatal.decode(new Uint8Array(bytes));
}

function valid(text: string, s: JsonSchema): boolean {
  try {
    return validate(JSON.parse(text), s);
  } catch {
    return false;
  }
}

const SCHEMAS: Record<string, JsonSchema> = {
  any: true,
  person: {
    type: "object",
    properties: { name: { type: "string", minLength: 1, maxLength: 12 }, age: { type: "integer", minimum: 0, maximum: 120 }, email: { type: ["string", "null"] }, admin: { type: "boolean" } },
    required: ["name", "age"],
  },
  list: { type: "array", items: { enum: ["red", "green", "blue", 7, null] }, minItems: 1, maxItems: 4 },
  numbers: { type: "array", items: { anyOf: [{ type: "number" }, { type: "integer", minimum: -50, maximum: -3 }] }, maxItems: 5 },
  map: { type: "object", additionalProperties: { type: "integer", minimum: 10, maximum: 99 } },
  tree: { $ref: "#/$defs/node", $defs: { node: { type: "object", properties: { v: { type: "integer" }, kids: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 } }, required: ["v"] } } },
  constant: { const: { a: [1, "x"], b: null } },
  strings: { type: "array", items: { type: "string", minLength: 2, maxLength: 3 }, minItems: 2, maxItems: 2 },
};

const synthetic = createTokenizer(bpeVocab().meta);

describe("random walks on a synthetic byte-level BPE vocabulary", () => {
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    test(`${name}: every walk parses and validates`, () => {
      const g = compileJsonSchema(schema);
      for (let seed = 1; seed <= 40; seed++) {
        const c = new TokenConstraint(g, synthetic);
        const text = walk(synthetic, c, seed);
        expect(c.complete).toBe(true);
        if (!valid(text, schema)) throw new Error(`seed ${seed}: ${text}`);
        expect(g.matches(text)).toBe(true);
      }
    });
  }

  test("teeth: the same walk with a mask that allows every token produces invalid output", () => {
    const all = Int32Array.from({ length: synthetic.vocabSize }, (_, i) => i);
    let bad = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const c = new TokenConstraint(compileJsonSchema(SCHEMAS.person!), synthetic);
      let text = "";
      try {
        text = walk(synthetic, c, seed, () => all, 60);
      } catch {
        // not even UTF-8
      }
      if (!valid(text, SCHEMAS.person!)) bad++;
    }
    expect(bad).toBeGreaterThan(15);
  });
});

// ---------------------------------------------------------------------------------------------
// Random schemas from the subset
// ---------------------------------------------------------------------------------------------

function randomSchema(r: () => number, depth: number): S {
  const pick = <T,>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const kinds = depth > 0 ? ["string", "integer", "number", "boolean", "null", "enum", "object", "array", "anyOf", "map"] : ["string", "integer", "number", "boolean", "null", "enum"];
  switch (pick(kinds)) {
    case "string": {
      const min = Math.floor(r() * 3);
      return r() < 0.5 ? { type: "string", minLength: min, maxLength: min + Math.floor(r() * 4) } : { type: "string" };
    }
    case "integer": {
      const lo = Math.floor(r() * 200) - 100;
      return r() < 0.5 ? { type: "integer", minimum: lo, maximum: lo + Math.floor(r() * 1000) } : { type: "integer" };
    }
    case "enum": return { enum: [pick(["a", "bc", "é"]), pick([1, -2.5, true, null]), pick([{ k: 1 }, [1, 2], "ab"])] };
    case "object": {
      const props: S = {};
      const required: string[] = [];
      const n = 1 + Math.floor(r() * 3);
      for (let i = 0; i < n; i++) {
        props[`p${i}`] = randomSchema(r, depth - 1);
        if (r() < 0.5) required.push(`p${i}`);
      }
      return { type: "object", properties: props, required, additionalProperties: r() < 0.5 ? false : undefined };
    }
    case "array": {
      const min = Math.floor(r() * 2);
      return { type: "array", items: randomSchema(r, depth - 1), minItems: min, maxItems: min + Math.floor(r() * 3) };
    }
    case "anyOf": return { anyOf: [randomSchema(r, depth - 1), randomSchema(r, depth - 1)] };
    case "map": return { type: "object", additionalProperties: randomSchema(r, depth - 1) };
    default: return { type: pick(["number", "boolean", "null"]) };
  }
}

test("random schemas from the subset: random walks parse and validate", () => {
  const r = rng(7);
  for (let i = 0; i < 60; i++) {
    const schema = JSON.parse(JSON.stringify(randomSchema(r, 3))) as S;
    const g = compileJsonSchema(schema);
    for (let seed = 1; seed <= 5; seed++) {
      const c = new TokenConstraint(g, synthetic);
      const text = walk(synthetic, c, i * 100 + seed);
      if (!c.complete || !valid(text, schema)) throw new Error(`schema ${JSON.stringify(schema)} seed ${seed}: ${text}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Schema errors
// ---------------------------------------------------------------------------------------------

describe("schema errors", () => {
  const code = (s: JsonSchema) => {
    try {
      compileJsonSchema(s);
    } catch (e) {
      return { code: (e as KilnError).code, message: (e as Error).message };
    }
    return { code: "none", message: "" };
  };
  const UNSUPPORTED: [string, S][] = [
    ["pattern", { type: "string", pattern: "^a" }],
    ["format", { type: "string", format: "date" }],
    ["minimum", { type: "number", minimum: 0 }],
    ["maximum", { type: "number", maximum: 1 }],
    ["exclusiveMinimum", { type: "integer", exclusiveMinimum: 0 }],
    ["multipleOf", { type: "integer", multipleOf: 2 }],
    ["minProperties", { type: "object", minProperties: 1 }],
    ["patternProperties", { type: "object", patternProperties: {} }],
    ["allOf", { allOf: [{ type: "string" }] }],
    ["not", { not: { type: "string" } }],
    ["if", { if: true }],
    ["uniqueItems", { type: "array", uniqueItems: true }],
    ["prefixItems", { type: "array", prefixItems: [] }],
    ["contains", { type: "array", contains: true }],
    ["items", { type: "array", items: [{ type: "string" }] }],
    ["$ref", { $ref: "https://example.com/s.json" }],
    ["additionalProperties", { type: "object", properties: { a: true }, additionalProperties: { type: "string" } }],
    ["minLength", { type: "integer", minLength: 1 }],
  ];
  for (const [kw, s] of UNSUPPORTED) {
    test(`${kw} → UNSUPPORTED_SCHEMA naming it`, () => {
      const e = code(s);
      expect(e.code).toBe("UNSUPPORTED_SCHEMA");
      expect(e.message).toContain(`"${kw}"`);
      expect(e.message).toContain("#/");
    });
  }
  test("nested: the path leads to the keyword", () => {
    expect(code({ type: "object", properties: { a: { type: "array", items: { type: "string", format: "email" } } } }).message).toContain("#/properties/a/items/format");
  });
  test("annotations are ignored", () => {
    expect(code({ title: "t", description: "d", $schema: "x", default: 1, examples: [1], type: "integer" }).code).toBe("none");
  });
  const BAD: [string, JsonSchema][] = [
    ["unknown type", { type: "str" }],
    ["negative minLength", { type: "string", minLength: -1 }],
    ["minItems > maxItems", { type: "array", minItems: 3, maxItems: 1 }],
    ["required not listed", { type: "object", properties: { a: true }, required: ["b"] }],
    ["enum not an array", { enum: "a" }],
    ["missing $ref", { $ref: "#/$defs/nope" }],
    ["false", false],
    ["empty anyOf", { anyOf: [] }],
    ["self-reference", { $ref: "#/$defs/a", $defs: { a: { $ref: "#/$defs/a" } } }],
    ["empty integer range", { type: "integer", minimum: 5, maximum: 4 }],
  ];
  for (const [what, s] of BAD) test(`${what} → BAD_SCHEMA`, () => expect(code(s).code).toBe("BAD_SCHEMA"));
});

// ---------------------------------------------------------------------------------------------
// Real vocabularies
// ---------------------------------------------------------------------------------------------

const models = join(import.meta.dir, "..", "..", "models");
const SMOL = join(models, "SmolLM2-135M-Instruct.Q4_1.gguf");
const GEMMA = join(models, "gemma-3-270m-Q4_K_M.gguf");

for (const [name, path] of [["SmolLM2", SMOL], ["Gemma 3", GEMMA]] as const) {
  describe.skipIf(!existsSync(path))(`${name} vocabulary`, () => {
    let tok: Tokenizer;
    beforeAll(() => {
      tok = createTokenizer(parseGGUF(Bun.mmap(path)).metadata);
    });

    test("random walks parse and validate", () => {
      for (const key of ["any", "person", "list", "numbers", "tree", "strings"]) {
        const schema = SCHEMAS[key]!;
        const g = compileJsonSchema(schema);
        for (let seed = 1; seed <= 6; seed++) {
          const c = new TokenConstraint(g, tok);
          const text = walk(tok, c, seed, undefined, 200);
          if (!c.complete || !valid(text, schema)) throw new Error(`${key} seed ${seed}: ${text}`);
        }
      }
    }, 60_000);

    test("the trie-walk mask equals running every token through the grammar", () => {
      const g = compileJsonSchema(SCHEMAS.person!);
      const c = new TokenConstraint(g, tok);
      const logits = new Float32Array(tok.vocabSize);
      let stateBytes = new Uint8Array(0);
      for (const id of tok.encode('{"name": "Zoë 🦙", "age": 42}')) {
        logits.fill(1);
        c.mask(logits);
        // Reference: the accepted prefix, then each token's bytes, run through the grammar.
        const at = g.run(g.start, stateBytes)!;
        for (let t = 0; t < tok.vocabSize; t++) {
          const ok = logits[t] === 1;
          const piece = tok.tokenToPiece(t, false);
          const want = tok.isEog(t) ? c.complete : piece.length > 0 && g.run(at, piece) !== null;
          if (ok !== want) throw new Error(`token ${t} ${JSON.stringify(new TextDecoder().decode(tok.tokenToPiece(t, false)))}: mask ${ok}, grammar ${want}`);
        }
        c.accept(id);
        stateBytes = new Uint8Array([...stateBytes, ...tok.tokenToPiece(id, false)]);
      }
      expect(c.complete).toBe(true);
      expect(c.canContinue).toBe(false);
    }, 60_000);
  });
}


describe.skipIf(!existsSync(SMOL))("a greedy generation on SmolLM2 under a schema", () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(SMOL, { contextLength: 512 });
  });
  afterAll(() => model?.dispose());

  test("the text parses and validates", () => {
    const schema = SCHEMAS.person!;
    const tok = model.tokenizer;
    const c = new TokenConstraint(compileJsonSchema(schema), tok);
    const prompt = "<|im_start|>user\nDescribe a person as JSON with a name and an age.<|im_end|>\n<|im_start|>assistant\n";
    const ctx = model.createContext();
    let logits = ctx.eval(tok.encode(prompt, { parseSpecial: true })).f32;
    const out: number[] = [];
    for (let i = 0; i < 80; i++) {
      const l = Float32Array.from(logits.subarray(logits.length - tok.vocabSize));
      c.mask(l);
      let best = 0;
      for (let t = 1; t < l.length; t++) if (l[t]! > l[best]!) best = t;
      if (tok.isEog(best)) break;
      c.accept(best);
      out.push(best);
      if (!c.canContinue) break;
      logits = ctx.eval([best]).f32;
    }
    ctx.dispose();
    const text = tok.decode(out);
    console.log(`SmolLM2 under the person schema: ${text}`);
    expect(c.complete).toBe(true);
    expect(valid(text, schema)).toBe(true);
  }, 60_000);
});
