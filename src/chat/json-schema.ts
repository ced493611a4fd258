/**
 * JSON-schema constrained decoding, part 1: a JSON schema (a supported subset) compiled into a
 * byte-level grammar, and the pushdown recognizer that walks it one byte at a time.
 * `constrain.ts` turns this into a token mask for a tokenizer.
 *
 * The subset (anything else is a KilnError "UNSUPPORTED_SCHEMA" naming the keyword and its path):
 * - `true` / `{}`: any JSON value (the `json: true` mode).
 * - `type`: object, array, string, number, integer, boolean, null, or an array of them; without
 *   `type` the type follows the keywords (properties → object, items → array, minLength → string),
 *   or any value when there are none.
 * - object: `properties` and `required`. Properties are emitted in schema order, each optional
 *   one may be skipped. With `properties`, only the listed properties are allowed whatever
 *   `additionalProperties` says (absent, true or false); without `properties`, keys are free
 *   strings and values follow `additionalProperties` (a schema, `true`/absent = any value, `false`
 *   = the empty object). `properties` together with a schema-valued `additionalProperties` is
 *   unsupported.
 * - array: `items` (one schema), `minItems`, `maxItems`.
 * - string: `minLength`, `maxLength` (in code points; an escape counts as one), JSON escapes,
 *   full UTF-8 (well-formed sequences only; `\u` escapes of lone surrogates are not produced).
 * - number: the JSON number grammar, at most 20 integer, 20 fraction and 2 exponent digits (always finite as a double).
 * - integer: digits only (no fraction or exponent), at most 16 digits; `minimum` / `maximum`
 *   (inclusive, rounded inward to integers). `minimum`/`maximum` on numbers are unsupported.
 * - `enum`, `const`: any JSON values, emitted as `JSON.stringify` writes them; with `type` beside
 *   them the values are filtered by type, other keywords beside them are unsupported.
 * - `anyOf`; `oneOf` is treated as `anyOf` (the grammar does not check that exactly one matches).
 * - `$ref` to `#/$defs/NAME` or `#/definitions/NAME` of the root schema (recursion allowed).
 * - Ignored annotations: title, description, $schema, $id, $comment, default, examples,
 *   deprecated, readOnly, writeOnly; `$defs`/`definitions` are read only through `$ref`.
 *
 * Whitespace: none before the value or after it; between tokens (after `{`, `[`, `,`, `:`, and
 * before `,`, `:`, `]`, `}`) at most MAX_WS_BYTES bytes of space, tab, newline or carriage return,
 * so a model cannot loop on whitespace. Nesting is limited to MAX_STACK frames.
 */
import { KilnError } from "../errors";

/**
 * A JSON Schema (an object, or `true` for any JSON value): the subset constrained decoding
 * supports is listed in src/chat/json-schema.ts; any other keyword is a KilnError UNSUPPORTED_SCHEMA.
 */
export type JsonSchema = Record<string, unknown> | boolean;

/** Whitespace bytes allowed in one gap between tokens. */
export const MAX_WS_BYTES = 4;
/** Most recognizer frames (about two per nesting level). */
export const MAX_STACK = 64;
const MAX_INT_DIGITS = 20;
const MAX_FRAC_DIGITS = 20;
const MAX_EXP_DIGITS = 2; // with 20 integer digits, at most ~1e119: finite as a double
const MAX_BOUNDED_INT_DIGITS = 16;

// ---------------------------------------------------------------------------------------------
// Grammar nodes
// ---------------------------------------------------------------------------------------------

export type GNode =
  | { id: number; kind: "alt"; options: GNode[] }
  | { id: number; kind: "lit"; bytes: Uint8Array }
  | { id: number; kind: "str"; min: number; max: number }
  | { id: number; kind: "num" }
  | { id: number; kind: "int"; min: number; max: number }
  | { id: number; kind: "arr"; items: GNode | null; min: number; max: number }
  | { id: number; kind: "obj"; props: { key: Uint8Array; value: GNode; required: boolean }[] }
  | { id: number; kind: "map"; value: GNode | null };

const utf8 = new TextEncoder();
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;
type TypeName = (typeof TYPES)[number];
const ANNOTATIONS = new Set(["title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"]);
const KEYWORDS_OF: Record<TypeName, string[]> = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "minItems", "maxItems"],
  string: ["minLength", "maxLength"],
  integer: ["minimum", "maximum"],
  number: [],
  boolean: [],
  null: [],
};
const SUPPORTED = new Set(["type", "enum", "const", "anyOf", "oneOf", "$ref", ...Object.values(KEYWORDS_OF).flat()]);

const bad = (path: string, msg: string) => new KilnError("BAD_SCHEMA", `JSON schema ${path}: ${msg}`);
const unsupported = (path: string, kw: string, why = "is not supported") => new KilnError("UNSUPPORTED_SCHEMA", `JSON schema ${path}/${kw}: "${kw}" ${why}`);
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

function typeOf(v: unknown): TypeName | "other" {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  if (typeof v === "string" || typeof v === "boolean" || typeof v === "object") return typeof v as TypeName;
  return "other";
}

class Compiler {
  nodes: GNode[] = [];
  refs = new Map<string, GNode>();
  constructor(readonly root: JsonSchema) {}

  add<T extends Omit<GNode, "id">>(n: T): GNode {
    const node = { ...n, id: this.nodes.length } as unknown as GNode;
    this.nodes.push(node);
    return node;
  }

  #any: GNode | null = null;
  /** Any JSON value (cyclic: objects and arrays of any values). */
  any(): GNode {
    if (this.#any) return this.#any;
    const alt = this.add({ kind: "alt", options: [] as GNode[] }) as GNode & { kind: "alt" };
    this.#any = alt;
    alt.options.push(
      this.add({ kind: "map", value: alt }), this.add({ kind: "arr", items: alt, min: 0, max: Infinity }),
      this.add({ kind: "str", min: 0, max: Infinity }), this.add({ kind: "num" }),
      this.lit(true), this.lit(false), this.lit(null),
    );
    return alt;
  }

  lit(v: unknown): GNode {
    return this.add({ kind: "lit", bytes: utf8.encode(JSON.stringify(v)) });
  }

  /** A node, or null for `false` (nothing matches). */
  compile(s: unknown, path: string): GNode | null {
    if (s === true) return this.any();
    if (s === false) return null;
    if (!isObj(s)) throw bad(path, "a schema must be an object or a boolean");
    for (const k of Object.keys(s)) if (!SUPPORTED.has(k) && !ANNOTATIONS.has(k)) throw unsupported(path, k);
    const siblings = (kw: string, allowed: string[]) => {
      for (const k of Object.keys(s)) if (k !== kw && !ANNOTATIONS.has(k) && !allowed.includes(k)) throw unsupported(path, k, `beside "${kw}" is not supported`);
    };

    if ("$ref" in s) {
      siblings("$ref", []);
      return this.ref(s.$ref, `${path}/$ref`);
    }
    for (const kw of ["anyOf", "oneOf"] as const) {
      if (!(kw in s)) continue;
      siblings(kw, []);
      const list = s[kw];
      if (!Array.isArray(list) || list.length === 0) throw bad(`${path}/${kw}`, "must be a non-empty array");
      const options = list.map((x, i) => this.compile(x, `${path}/${kw}/${i}`)).filter((x): x is GNode => x !== null);
      if (options.length === 0) throw bad(`${path}/${kw}`, "no alternative can match");
      return options.length === 1 ? options[0]! : this.add({ kind: "alt", options });
    }

    const types = this.types(s, path);
    if ("enum" in s || "const" in s) {
      const kw = "enum" in s ? "enum" : "const";
      siblings(kw, ["type"]);
      if (kw === "enum" && !Array.isArray(s.enum)) throw bad(`${path}/enum`, "must be an array");
      const values = (kw === "enum" ? (s.enum as unknown[]) : [s.const]).filter((v) => {
        const t = typeOf(v);
        if (t === "other") throw bad(`${path}/${kw}`, "values must be JSON values");
        return types === null || types.includes(t) || (t === "integer" && types.includes("number"));
      });
      if (values.length === 0) throw bad(`${path}/${kw}`, "no value matches the type");
      const lits = [...new Set(values.map((v) => JSON.stringify(v)))].map((j) => this.lit(JSON.parse(j)));
      return lits.length === 1 ? lits[0]! : this.add({ kind: "alt", options: lits });
    }

    const want = types ?? this.inferTypes(s);
    if (want === null) return this.any();
    for (const k of Object.keys(s)) {
      if (k === "type" || ANNOTATIONS.has(k)) continue;
      const owner = (Object.keys(KEYWORDS_OF) as TypeName[]).filter((t) => KEYWORDS_OF[t].includes(k));
      if (!owner.some((t) => want.includes(t))) {
        if (k === "minimum" || k === "maximum") throw unsupported(path, k, "is supported for integers only");
        throw unsupported(path, k, `does not apply to type ${want.join("/")}`);
      }
    }
    const options: GNode[] = [];
    for (const t of want) {
      if (t === "integer" && want.includes("number")) continue; // number covers integers
      const n = this.typed(t, s, path);
      if (n) options.push(n);
    }
    if (options.length === 0) throw bad(path, "no value can match");
    return options.length === 1 ? options[0]! : this.add({ kind: "alt", options });
  }

  types(s: Record<string, unknown>, path: string): TypeName[] | null {
    if (!("type" in s)) return null;
    const list = Array.isArray(s.type) ? s.type : [s.type];
    if (list.length === 0) throw bad(`${path}/type`, "must not be empty");
    for (const t of list) if (!TYPES.includes(t as TypeName)) throw bad(`${path}/type`, `unknown type ${JSON.stringify(t)}`);
    return [...new Set(list as TypeName[])];
  }

  inferTypes(s: Record<string, unknown>): TypeName[] | null {
    const found = (Object.keys(KEYWORDS_OF) as TypeName[]).filter((t) => KEYWORDS_OF[t].some((k) => k in s));
    return found.length ? found : null;
  }

  count(s: Record<string, unknown>, kw: string, path: string, dflt: number): number {
    if (!(kw in s)) return dflt;
    const v = s[kw];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw bad(`${path}/${kw}`, "must be a non-negative integer");
    return v;
  }

  typed(t: TypeName, s: Record<string, unknown>, path: string): GNode | null {
    switch (t) {
      case "null": return this.lit(null);
      case "boolean": return this.add({ kind: "alt", options: [this.lit(true), this.lit(false)] });
      case "number": return this.add({ kind: "num" });
      case "string": {
        const min = this.count(s, "minLength", path, 0), max = this.count(s, "maxLength", path, Infinity);
        if (min > max) throw bad(path, "minLength > maxLength");
        return this.add({ kind: "str", min, max });
      }
      case "integer": {
        const bound = (kw: string, dflt: number, round: (x: number) => number) => {
          if (!(kw in s)) return dflt;
          const v = s[kw];
          if (typeof v !== "number" || !Number.isFinite(v)) throw bad(`${path}/${kw}`, "must be a number");
          if (Math.abs(v) > Number.MAX_SAFE_INTEGER) throw unsupported(path, kw, "beyond ±2^53 is not supported");
          return round(v);
        };
        const min = bound("minimum", -Infinity, Math.ceil), max = bound("maximum", Infinity, Math.floor);
        if (min > max) throw bad(path, "no integer lies between minimum and maximum");
        return this.add({ kind: "int", min, max });
      }
      case "array": {
        const min = this.count(s, "minItems", path, 0);
        let max = this.count(s, "maxItems", path, Infinity);
        if (min > max) throw bad(path, "minItems > maxItems");
        if ("items" in s && Array.isArray(s.items)) throw unsupported(path, "items", "as an array (tuple) is not supported");
        const items = "items" in s ? this.compile(s.items, `${path}/items`) : this.any();
        if (items === null) max = 0;
        if (min > max) throw bad(path, "items is false but minItems > 0");
        return this.add({ kind: "arr", items, min, max });
      }
      case "object": {
        const addl = s.additionalProperties;
        if (addl !== undefined && typeof addl !== "boolean" && !isObj(addl)) throw bad(`${path}/additionalProperties`, "must be a schema");
        const required = s.required ?? [];
        if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) throw bad(`${path}/required`, "must be an array of strings");
        if (!("properties" in s)) {
          if (required.length) throw unsupported(path, "required", "without properties is not supported");
          if (addl === false) return this.add({ kind: "obj", props: [] });
          return this.add({ kind: "map", value: addl === undefined || addl === true ? this.any() : this.compile(addl, `${path}/additionalProperties`) });
        }
        if (isObj(addl)) throw unsupported(path, "additionalProperties", "as a schema beside properties is not supported");
        if (!isObj(s.properties)) throw bad(`${path}/properties`, "must be an object");
        const props: { key: Uint8Array; value: GNode; required: boolean }[] = [];
        for (const r of required) if (!(r in s.properties)) throw bad(`${path}/required`, `"${r}" is required but not among the properties`);
        for (const [name, sub] of Object.entries(s.properties)) {
          const value = this.compile(sub, `${path}/properties/${name}`);
          const req = required.includes(name);
          if (value === null) {
            if (req) throw bad(`${path}/properties/${name}`, "is required but its schema is false");
            continue;
          }
          props.push({ key: utf8.encode(JSON.stringify(name)), value, required: req });
        }
        return this.add({ kind: "obj", props });
      }
    }
  }

  ref(r: unknown, path: string): GNode | null {
    if (typeof r !== "string") throw bad(path, "must be a string");
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(r);
    if (!m) throw new KilnError("UNSUPPORTED_SCHEMA", `JSON schema ${path}: "$ref" ${JSON.stringify(r)} is not supported (only #/$defs/NAME)`);
    const hit = this.refs.get(r);
    if (hit) return hit;
    const defs = isObj(this.root) ? this.root[m[1]!] : undefined;
    const name = m[2]!.replace(/~1/g, "/").replace(/~0/g, "~");
    if (!isObj(defs) || !(name in defs)) throw bad(path, `${r} does not exist`);
    // A placeholder first, so a recursive reference finds it; filled in once compiled.
    const slot = this.add({ kind: "alt", options: [] as GNode[] }) as GNode & { kind: "alt" };
    this.refs.set(r, slot);
    const target = this.compile(defs[name], `#/${m[1]}/${name}`);
    if (target === null) throw bad(path, `${r} is false`);
    slot.options.push(target);
    return slot;
  }
}

/** An alternative that reaches itself without consuming a byte would recurse forever. */
function checkNoEmptyCycle(nodes: GNode[]): void {
  const state = new Uint8Array(nodes.length); // 0 new, 1 on the path, 2 done
  const visit = (n: GNode): void => {
    if (n.kind !== "alt" || state[n.id] === 2) return;
    if (state[n.id] === 1) throw bad("#", "a $ref refers to itself without any value in between");
    state[n.id] = 1;
    for (const o of n.options) visit(o);
    state[n.id] = 2;
  };
  for (const n of nodes) visit(n);
}

/** Most compiled grammars kept for reuse (by the schema's JSON text), with their cached states and masks. */
const MAX_CACHED_GRAMMARS = 32;
const compiled = new Map<string, JsonGrammar>();

/**
 * Compiles a schema (or `true` = any JSON value: the `json: true` mode) into a byte-level grammar.
 * The same schema (same JSON text) gives the same grammar object back, so the states and token
 * masks it has cached serve the next generation too. Unsupported keywords → KilnError
 * "UNSUPPORTED_SCHEMA" naming the keyword and its JSON path; malformed schemas → "BAD_SCHEMA".
 */
export function compileJsonSchema(schema: JsonSchema): JsonGrammar {
  let text: string | undefined;
  try {
    text = JSON.stringify(schema);
  } catch {
    throw bad("#", "is not plain JSON");
  }
  const hit = text === undefined ? undefined : compiled.get(text);
  if (hit) {
    compiled.delete(text!); // most recently used last
    compiled.set(text!, hit);
    return hit;
  }
  const g = compileUncached(schema);
  if (text !== undefined) {
    if (compiled.size >= MAX_CACHED_GRAMMARS) compiled.delete(compiled.keys().next().value!);
    compiled.set(text, g);
  }
  return g;
}

function compileUncached(schema: JsonSchema): JsonGrammar {
  const c = new Compiler(schema);
  const root = c.compile(schema, "#");
  if (root === null) throw bad("#", "the schema false matches nothing");
  checkNoEmptyCycle(c.nodes);
  return new JsonGrammar(root);
}

// ---------------------------------------------------------------------------------------------
// The recognizer: a set of stacks of immutable frames; states are interned by their text key,
// so equal states are one object and can carry cached transitions (and, in constrain.ts, masks).
// ---------------------------------------------------------------------------------------------

type Frame =
  /** Before a value of `node`; `ws` whitespace bytes seen. */
  | { t: "V"; node: GNode; ws: number; key: string }
  /** Inside a string: `n` code points (saturated at cap), escape state, pending UTF-8 continuation bytes in [lo, hi]. */
  | { t: "S"; min: number; max: number; n: number; esc: number; u8: number; lo: number; hi: number; key: string }
  /** Inside a literal at byte `pos`. */
  | { t: "L"; bytes: Uint8Array; pos: number; key: string }
  /** Inside a number: phase, sign, digits in the current part, value so far (bounded integers). */
  | { t: "N"; node: GNode & ({ kind: "num" } | { kind: "int" }); ph: number; neg: boolean; nd: number; v: number; key: string }
  /** Inside an array: `n` items begun; ph 0 after `[`, 1 after an item. */
  | { t: "A"; node: GNode & { kind: "arr" }; n: number; ph: number; ws: number; key: string }
  /** Inside an object with fixed properties: next property index `i`; ph 0 after `{`, 1 after a member, 2 after `,`. */
  | { t: "O"; node: GNode & { kind: "obj" }; i: number; ph: number; ws: number; key: string }
  /** Inside a free-keyed object: ph 0 after `{`, 1 after a member, 2 after `,`. */
  | { t: "M"; node: GNode & { kind: "map" }; ph: number; ws: number; key: string }
  /** Before the punctuation byte `ch` (the `:` after a key). */
  | { t: "P"; ch: number; ws: number; key: string };

interface Stack {
  f: Frame;
  up: Stack | null;
  depth: number;
  key: string;
}

export interface GrammarState {
  readonly key: string;
  readonly stacks: readonly (Stack | null)[];
  /** Transitions by byte: undefined = not computed yet, null = rejected. */
  readonly next: (GrammarState | null | undefined)[];
  /** The bytes so far form a complete value. */
  readonly complete: boolean;
  /** Some byte is allowed next (computed on first use). */
  canContinue?: boolean;
}

const push = (f: Frame, up: Stack | null): Stack | null =>
  up !== null && up.depth >= MAX_STACK ? null : { f, up, depth: (up?.depth ?? 0) + 1, key: up ? `${f.key};${up.key}` : f.key };

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

const V = (node: GNode, ws: number): Frame => ({ t: "V", node, ws, key: `V${node.id},${ws}` });
function S(min: number, max: number, n: number, esc: number, u8: number, lo: number, hi: number): Frame {
  return { t: "S", min, max, n, esc, u8, lo, hi, key: `S${min},${max},${n},${esc},${u8},${lo},${hi}` };
}
const L = (bytes: Uint8Array, pos: number, id: number): Frame => ({ t: "L", bytes, pos, key: `L${id},${pos}` });
function N(node: GNode & ({ kind: "num" } | { kind: "int" }), ph: number, neg: boolean, nd: number, v: number): Frame {
  const bounded = node.kind === "int" && (node.min > -Infinity || node.max < Infinity);
  return { t: "N", node, ph, neg, nd, v, key: `N${node.id},${ph},${neg ? 1 : 0},${nd}${bounded ? "," + v : ""}` };
}
const A = (node: GNode & { kind: "arr" }, n: number, ph: number, ws: number): Frame => ({ t: "A", node, n, ph, ws, key: `A${node.id},${n},${ph},${ws}` });
const O = (node: GNode & { kind: "obj" }, i: number, ph: number, ws: number): Frame => ({ t: "O", node, i, ph, ws, key: `O${node.id},${i},${ph},${ws}` });
const M = (node: GNode & { kind: "map" }, ph: number, ws: number): Frame => ({ t: "M", node, ph, ws, key: `M${node.id},${ph},${ws}` });
const P = (ch: number, ws: number): Frame => ({ t: "P", ch, ws, key: `P${ch},${ws}` });

/** Keys of interned literals need an id that is unique per byte string. */
const litIds = new WeakMap<Uint8Array, number>();
let nextLitId = 0;
const litId = (b: Uint8Array) => {
  let id = litIds.get(b);
  if (id === undefined) litIds.set(b, (id = nextLitId++));
  return id;
};

/** Whether a bounded integer whose digits so far are `v` (sign `neg`) can still end in [min, max]. */
function intFeasible(neg: boolean, v: number, nd: number, min: number, max: number): boolean {
  if (v === 0 && nd === 1) return neg ? min <= 0 && max >= 0 : min <= 0 && max >= 0; // "0" or "-0" cannot grow
  // Appending j digits reaches [v·10^j, (v+1)·10^j − 1] in magnitude.
  let lo = v, hi = v;
  for (let j = 0; nd + j <= MAX_BOUNDED_INT_DIGITS; j++) {
    const a = neg ? -hi : lo, b = neg ? -lo : hi;
    if (a <= max && b >= min) return true;
    lo *= 10;
    hi = hi * 10 + 9;
  }
  return false;
}

const stackComplete = (s: Stack | null): boolean => {
  while (s !== null) {
    const f = s.f;
    if (f.t !== "N" || !(f.ph === 2 || f.ph === 3 || f.ph === 5 || f.ph === 8)) return false;
    if (f.node.kind === "int") {
      const x = f.neg ? -f.v : f.v;
      if (x < f.node.min || x > f.node.max) return false;
    }
    s = s.up;
  }
  return true;
};

/** The start of a value of `node` at byte b, on top of `up`. */
function startValue(node: GNode, b: number, up: Stack | null, out: (Stack | null)[]): void {
  switch (node.kind) {
    case "alt":
      for (const o of node.options) startValue(o, b, up, out);
      return;
    case "lit":
      if (node.bytes[0] === b) out.push(node.bytes.length === 1 ? up : push(L(node.bytes, 1, litId(node.bytes)), up));
      return;
    case "str":
      if (b === 0x22) pushOk(out, push(S(node.min, node.max, 0, 0, 0, 0, 0), up));
      return;
    case "num":
    case "int": {
      if (b === 0x2d) {
        if (node.kind === "int" && node.min >= 0) return;
        pushOk(out, push(N(node, 1, true, 0, 0), up));
      } else if (isDigit(b)) stepNumber(N(node, 1, false, 0, 0) as Frame & { t: "N" }, b, up, out);
      return;
    }
    case "arr":
      if (b === 0x5b) pushOk(out, push(A(node, 0, 0, 0), up));
      return;
    case "obj":
      if (b === 0x7b) pushOk(out, push(O(node, 0, 0, 0), up));
      return;
    case "map":
      if (b === 0x7b) pushOk(out, push(M(node, 0, 0), up));
      return;
  }
}

function pushOk(out: (Stack | null)[], s: Stack | null | false): void {
  if (s !== null && s !== false) out.push(s);
}

/** Numbers: ph 1 = after the sign (or at the start), 2 = after a leading 0, 3 = integer digits, 4 = after '.', 5 = fraction digits, 6 = after e/E, 7 = after the exponent sign, 8 = exponent digits. */
function stepNumber(f: Frame & { t: "N" }, b: number, up: Stack | null, out: (Stack | null)[]): boolean {
  const node = f.node;
  const int = node.kind === "int";
  const bounded = int && (node.min > -Infinity || node.max < Infinity);
  const to = (ph: number, nd: number, v: number) => {
    if (bounded && !intFeasible(f.neg, v, nd, node.min, node.max)) return false;
    pushOk(out, push(N(node, ph, f.neg, nd, v), up));
    return true;
  };
  switch (f.ph) {
    case 1:
      if (b === 0x30) return to(2, 1, 0);
      if (isDigit(b)) return to(3, 1, b - 0x30);
      return false;
    case 2:
    case 3:
      if (f.ph === 3 && isDigit(b) && f.nd < (int ? MAX_BOUNDED_INT_DIGITS : MAX_INT_DIGITS)) return to(3, f.nd + 1, bounded ? f.v * 10 + (b - 0x30) : 0);
      if (int) return false;
      if (b === 0x2e) return to(4, 0, 0);
      if (b === 0x65 || b === 0x45) return to(6, 0, 0);
      return false;
    case 4:
    case 5:
      if (isDigit(b) && f.nd < MAX_FRAC_DIGITS) return to(5, f.nd + 1, 0);
      if (f.ph === 5 && (b === 0x65 || b === 0x45)) return to(6, 0, 0);
      return false;
    case 6:
      if (b === 0x2b || b === 0x2d) return to(7, 0, 0);
    // falls through
    case 7:
    case 8:
      if (isDigit(b) && f.nd < MAX_EXP_DIGITS) return to(8, f.nd + 1, 0);
      return false;
  }
  return false;
}

/** Next frames of the string frame f at byte b (null: rejected; `up` returned when it closes). */
function stepString(f: Frame & { t: "S" }, b: number, up: Stack | null, out: (Stack | null)[]): void {
  const cap = Math.max(f.min, f.max === Infinity ? f.min : f.max);
  const same = (esc: number, u8: number, lo: number, hi: number, count: boolean) => {
    const n = count ? Math.min(f.n + 1, cap) : f.n;
    pushOk(out, push(S(f.min, f.max, n, esc, u8, lo, hi), up));
  };
  if (f.u8 > 0) {
    if (b < f.lo || b > f.hi) return;
    return same(0, f.u8 - 1, 0x80, 0xbf, f.u8 === 1);
  }
  if (f.esc === 1) {
    if (b === 0x75) return same(2, 0, 0, 0, false);
    if (b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74) return same(0, 0, 0, 0, true);
    return;
  }
  if (f.esc >= 2) {
    if (!isHex(b)) return;
    if (f.esc === 2 && (b === 0x44 || b === 0x64)) return same(6, 0, 0, 0, false); // \uD…: not a surrogate
    if (f.esc === 6) return b <= 0x37 ? same(4, 0, 0, 0, false) : undefined;
    return f.esc === 5 ? same(0, 0, 0, 0, true) : same(f.esc + 1, 0, 0, 0, false);
  }
  // A new character: is there room for it?
  if (b === 0x22) {
    if (f.n >= f.min) out.push(up);
    return;
  }
  if (f.n >= f.max) return;
  if (b === 0x5c) return same(1, 0, 0, 0, false);
  if (b < 0x20) return;
  if (b < 0x80) return same(0, 0, 0, 0, true);
  if (b >= 0xc2 && b <= 0xdf) return same(0, 1, 0x80, 0xbf, false);
  if (b === 0xe0) return same(0, 2, 0xa0, 0xbf, false);
  if (b === 0xed) return same(0, 2, 0x80, 0x9f, false);
  if (b >= 0xe1 && b <= 0xef) return same(0, 2, 0x80, 0xbf, false);
  if (b === 0xf0) return same(0, 3, 0x90, 0xbf, false);
  if (b >= 0xf1 && b <= 0xf3) return same(0, 3, 0x80, 0xbf, false);
  if (b === 0xf4) return same(0, 3, 0x80, 0x8f, false);
}

/** All stacks that follow stack s after byte b. */
function stepStack(s: Stack | null, b: number, out: (Stack | null)[]): void {
  if (s === null) return;
  const f = s.f, up = s.up;
  switch (f.t) {
    case "V":
      if (isWs(b) && f.ws < MAX_WS_BYTES) return pushOk(out, push(V(f.node, f.ws + 1), up));
      return startValue(f.node, b, up, out);
    case "S":
      return stepString(f, b, up, out);
    case "L":
      if (f.bytes[f.pos] !== b) return;
      out.push(f.pos + 1 === f.bytes.length ? up : push(L(f.bytes, f.pos + 1, litId(f.bytes)), up));
      return;
    case "N":
      if (!stepNumber(f, b, up, out) && stackComplete({ f, up: null, depth: 1, key: "" })) stepStack(up, b, out);
      return;
    case "P":
      if (isWs(b) && f.ws < MAX_WS_BYTES) return pushOk(out, push(P(f.ch, f.ws + 1), up));
      if (b === f.ch) out.push(up);
      return;
    case "A": {
      const node = f.node;
      if (isWs(b) && f.ws < MAX_WS_BYTES) return pushOk(out, push(A(node, f.n, f.ph, f.ws + 1), up));
      if (b === 0x5d) {
        if (f.n >= node.min) out.push(up);
        return;
      }
      if (f.ph === 0) {
        if (node.items === null || node.max === 0) return;
        const below = push(A(node, 1, 1, 0), up);
        if (below) startValue(node.items, b, below, out);
        return;
      }
      if (b === 0x2c && f.n < node.max) {
        const below = push(A(node, f.n + 1, 1, 0), up);
        if (below) pushOk(out, push(V(node.items!, 0), below));
      }
      return;
    }
    case "O": {
      const node = f.node, props = node.props;
      if (isWs(b) && f.ws < MAX_WS_BYTES) return pushOk(out, push(O(node, f.i, f.ph, f.ws + 1), up));
      // Candidates: the next properties up to and including the first required one.
      let last = f.i;
      while (last < props.length && !props[last]!.required) last++;
      const mayClose = last >= props.length;
      if (b === 0x7d) {
        if (f.ph !== 2 && mayClose) out.push(up);
        return;
      }
      if (f.ph === 1) {
        if (b === 0x2c && f.i < props.length) pushOk(out, push(O(node, f.i, 2, 0), up));
        return;
      }
      if (b !== 0x22) return;
      for (let j = f.i; j <= last && j < props.length; j++) {
        const p = props[j]!;
        const s1 = push(O(node, j + 1, 1, 0), up);
        const s2 = s1 && push(V(p.value, 0), s1);
        const s3 = s2 && push(P(0x3a, 0), s2);
        pushOk(out, s3 && push(L(p.key, 1, litId(p.key)), s3));
      }
      return;
    }
    case "M": {
      const node = f.node;
      if (isWs(b) && f.ws < MAX_WS_BYTES) return pushOk(out, push(M(node, f.ph, f.ws + 1), up));
      if (b === 0x7d) {
        if (f.ph !== 2) out.push(up);
        return;
      }
      if (f.ph === 1) {
        if (b === 0x2c) pushOk(out, push(M(node, 2, 0), up));
        return;
      }
      if (b !== 0x22 || node.value === null) return;
      const s1 = push(M(node, 1, 0), up);
      const s2 = s1 && push(V(node.value, 0), s1);
      const s3 = s2 && push(P(0x3a, 0), s2);
      pushOk(out, s3 && push(S(0, Infinity, 0, 0, 0, 0, 0), s3));
      return;
    }
  }
}

/** Most interned states kept per grammar; past it the table starts afresh (states stay valid). */
const MAX_INTERNED = 200_000;

export class JsonGrammar {
  readonly start: GrammarState;
  #states = new Map<string, GrammarState>();

  constructor(readonly root: GNode) {
    this.start = this.#intern([push(V(root, MAX_WS_BYTES), null)]);
  }

  #intern(stacks: (Stack | null)[]): GrammarState {
    const keys = stacks.map((s) => (s === null ? "" : s.key));
    let key: string;
    if (stacks.length === 1) key = keys[0]!;
    else {
      // Dedupe and order, so that equal sets have one key.
      const uniq = new Map<string, Stack | null>();
      stacks.forEach((s, i) => uniq.set(keys[i]!, s));
      const sorted = [...uniq.keys()].sort();
      key = sorted.join("\n");
      stacks = sorted.map((k) => uniq.get(k)!);
    }
    let st = this.#states.get(key);
    if (st === undefined) {
      if (this.#states.size >= MAX_INTERNED) this.#states.clear();
      st = { key, stacks, next: new Array(256), complete: stacks.some(stackComplete) };
      this.#states.set(key, st);
    }
    return st;
  }

  /** The state after byte b, or null if the grammar does not allow it. */
  step(s: GrammarState, b: number): GrammarState | null {
    const hit = s.next[b];
    if (hit !== undefined) return hit;
    const out: (Stack | null)[] = [];
    for (const st of s.stacks) stepStack(st, b, out);
    const n = out.length === 0 ? null : this.#intern(out);
    (s.next as (GrammarState | null)[])[b] = n;
    return n;
  }

  /** Whether any byte is allowed after s. */
  canContinue(s: GrammarState): boolean {
    if (s.canContinue === undefined) {
      let ok = false;
      for (let b = 0; b < 256 && !ok; b++) ok = this.step(s, b) !== null;
      s.canContinue = ok;
    }
    return s.canContinue;
  }

  /** Runs bytes from s; null if any is rejected. */
  run(s: GrammarState | null, bytes: Uint8Array): GrammarState | null {
    for (let i = 0; i < bytes.length && s !== null; i++) s = this.step(s, bytes[i]!);
    return s;
  }

  /** Whether `text` is a complete value of this grammar (for tests and callers without a tokenizer). */
  matches(text: string): boolean {
    const s = this.run(this.start, utf8.encode(text));
    return s !== null && s.complete;
  }
}
