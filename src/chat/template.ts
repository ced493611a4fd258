/**
 * Chat templates: a conversation rendered to prompt text exactly as Hugging Face transformers'
 * `apply_chat_template` renders it, using `@huggingface/jinja` (a Jinja interpreter in JS).
 *
 * transformers compiles a template in an `ImmutableSandboxedEnvironment(trim_blocks=True,
 * lstrip_blocks=True)` with the `loopcontrols` extension, the globals `raise_exception(msg)` and
 * `strftime_now(fmt)`, a `tojson` filter without ASCII escaping, and renders it with `messages`,
 * `tools=None`, `documents=None`, `add_generation_prompt` and the special tokens. We do the same
 * (test/chat/template.test.ts checks byte parity against Python jinja2 on real models' templates).
 *
 * A template stored in a model file is untrusted code. What we enforce:
 *   - only plain data goes in: messages and `extra` are copied into the interpreter's own value
 *     types (Maps, arrays, primitives); functions, class instances, bigints are refused, so no
 *     host object or prototype is reachable (`messages.constructor` is undefined, as in jinja2).
 *   - template source ≤ MAX_TEMPLATE_CHARS, and its parse is cached (a few entries).
 *   - evaluation steps ≤ maxSteps (every AST node evaluated is a step; it bounds loop iterations),
 *     nesting ≤ MAX_DEPTH (macro recursion), `range()` ≤ MAX_RANGE items.
 *   - every string value produced, the output included, ≤ maxOutputChars (UTF-16 units).
 *   - wall time ≤ timeoutMs, checked cooperatively at every step and every range() (whose items
 *     count as steps, since a loop with an empty body takes none of its own): the interpreter is
 *     synchronous and has no hook, so a single built-in call (one filter on a large string)
 *     runs to its end before the check; those calls are themselves bounded by the size caps.
 * Every failure (parse error, `raise_exception`, a limit, bad input) is a KilnError with code
 * CHAT_TEMPLATE whose message names the template and the cause.
 */
import { Environment, Interpreter, parse, tokenize } from "@huggingface/jinja";
import { KilnError } from "../errors";
import { getString } from "../gguf/metadata";
import type { GGUFMetadata } from "../gguf/reader";

/** One message of a conversation, as chat templates (and OpenAI's API) see it. */
export type ChatMessage = {
  /** "system", "user" or "assistant" (a template may accept others, e.g. "tool"). */
  role: string;
  /** The message text. */
  content: string;
};

/** Options of renderChatTemplate. */
export interface ChatTemplateOptions {
  /** Append the assistant turn's header so the model answers next (default true). */
  addGenerationPrompt?: boolean;
  /** The text of the model's BOS token, the template's `bos_token` (default ""). */
  bosToken?: string;
  /** The text of the model's EOS token, the template's `eos_token` (default ""). */
  eosToken?: string;
  /** Names the template in errors (a model file name, "chatml", …). */
  name?: string;
  /** More template variables (plain JSON-like data only), e.g. `tools`, `enable_thinking`. */
  extra?: Record<string, unknown>;
  /** Tighter or looser caps than the defaults (tests use small ones). */
  limits?: Partial<ChatTemplateLimits>;
}

export interface ChatTemplateLimits {
  maxSteps: number;
  maxOutputChars: number;
  timeoutMs: number;
}

export const DEFAULT_CHAT_TEMPLATE_LIMITS: Readonly<ChatTemplateLimits> = {
  maxSteps: 20_000_000,
  maxOutputChars: 1 << 20,
  timeoutMs: 1000,
};
const MAX_TEMPLATE_CHARS = 1 << 20;
const MAX_DEPTH = 500;
const MAX_RANGE = 1 << 20;
const MAX_DATA_DEPTH = 32;
const MAX_DATA_ITEMS = 1 << 20;
const PARSE_CACHE_MAX = 8;

/** Standard templates for models whose file carries none (or a broken one). */
export const BUILTIN_CHAT_TEMPLATES: Record<"chatml" | "gemma" | "llama3", string> = {
  chatml:
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  // Gemma's own template: no system role, so a system prompt is folded into the first user turn.
  gemma:
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\\n\\n' %}{% set loop_messages = messages[1:] %}" +
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}" +
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
  llama3:
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
};

/**
 * The model file's own template (`tokenizer.chat_template`), or undefined if it has none; a value
 * that is not a string is a GGUFError KV_WRONG_TYPE like any mistyped key.
 */
export function chatTemplateOf(metadata: GGUFMetadata): string | undefined {
  return metadata.has("tokenizer.chat_template") ? getString(metadata, "tokenizer.chat_template") : undefined;
}

/** Renders `messages` with `template` as transformers' `apply_chat_template(..., tokenize=False)`. */
export function renderChatTemplate(template: string, messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
  const name = opts.name ?? "chat template";
  const fail = (cause: string, err?: unknown): never => {
    throw new KilnError("CHAT_TEMPLATE", `chat template "${name}": ${cause}`, err === undefined ? undefined : { cause: err });
  };
  const limits = { ...DEFAULT_CHAT_TEMPLATE_LIMITS, ...opts.limits };
  if (typeof template !== "string") fail("the template is not a string");
  if (template.length > MAX_TEMPLATE_CHARS) fail(`template is ${template.length} chars, over the limit of ${MAX_TEMPLATE_CHARS}`);

  const vars: Record<string, unknown> = {
    messages: plainMessages(messages, fail),
    tools: null,
    documents: null,
    add_generation_prompt: opts.addGenerationPrompt ?? true,
  };
  if (opts.bosToken !== undefined) vars.bos_token = opts.bosToken;
  if (opts.eosToken !== undefined) vars.eos_token = opts.eosToken;
  for (const [k, v] of Object.entries(opts.extra ?? {})) {
    const budget = { items: MAX_DATA_ITEMS };
    const copied = plainData(v, 0, budget);
    if (copied === INVALID) fail(`extra.${k} is not plain data (only strings, numbers, booleans, null, arrays and plain objects)`);
    vars[k] = copied;
  }

  let program: ReturnType<typeof parse>;
  try {
    program = parsed(template);
  } catch (err) {
    return fail(`does not parse: ${messageOf(err)}`, err);
  }

  const env = new Environment();
  const globals: Record<string, unknown> = {
    true: true, false: false, none: null, True: true, False: false, None: null,
    raise_exception: (msg: unknown) => {
      throw new TemplateRaised(String(msg));
    },
    strftime_now: (fmt: unknown) => strftime(new Date(), String(fmt)),
    // Every item a range() makes is charged as a step: a loop over it may have an empty body
    // (no evaluation steps of its own), so its length is what bounds the work.
    range: (...a: [number, number?, number?]) => interpreter.charge(cappedRange(...a)),
    ...vars,
  };
  for (const [k, v] of Object.entries(globals)) env.set(k, v);

  const interpreter = new LimitedInterpreter(env, limits);
  try {
    const out = interpreter.run(program);
    return String(out.value);
  } catch (err) {
    if (err instanceof TemplateRaised) return fail(`raised: ${err.message}`, err);
    if (err instanceof LimitExceeded) return fail(err.message, err);
    if (err instanceof RangeError && /call stack/i.test(err.message)) return fail("recursion too deep", err);
    return fail(`render failed: ${messageOf(err)}`, err);
  }
}

// ---- the interpreter with limits --------------------------------------------------------

class TemplateRaised extends Error {}
class LimitExceeded extends Error {}

type Statement = Parameters<Interpreter["evaluate"]>[0];

class LimitedInterpreter extends Interpreter {
  private steps = 0;
  private depth = 0;
  private readonly deadline: number;

  constructor(env: Environment, private readonly limits: ChatTemplateLimits) {
    super(env);
    this.deadline = performance.now() + limits.timeoutMs;
  }

  /** Counts `items` (a range() just made) as steps, and checks the budget and the clock. */
  charge<T>(items: T[]): T[] {
    this.steps += items.length;
    this.check();
    return items;
  }

  private check(): void {
    if (this.steps > this.limits.maxSteps) throw new LimitExceeded(`over the limit of ${this.limits.maxSteps} evaluation steps`);
    if (performance.now() > this.deadline) throw new LimitExceeded(`rendering took over ${this.limits.timeoutMs} ms`);
  }

  override evaluate(statement: Statement, environment: Environment) {
    ++this.steps;
    // The clock is read every step: a step may be a loop whose body is empty (see charge).
    this.check();
    if (++this.depth > MAX_DEPTH) throw new LimitExceeded(`nesting deeper than ${MAX_DEPTH} (runaway recursion?)`);
    try {
      const v = super.evaluate(statement, environment);
      if (v.type === "StringValue" && (v.value as string).length > this.limits.maxOutputChars) {
        throw new LimitExceeded(`output over the limit of ${this.limits.maxOutputChars} chars`);
      }
      return v;
    } finally {
      this.depth--;
    }
  }
}

function cappedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (![start, stop, step].every(Number.isInteger)) throw new Error("range() takes integers");
  if (step === 0) throw new Error("range() arg 3 must not be zero");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  if (n > MAX_RANGE) throw new LimitExceeded(`range() of ${n} items is over the limit of ${MAX_RANGE}`);
  return Array.from({ length: n }, (_, i) => start + i * step);
}

const parseCache = new Map<string, ReturnType<typeof parse>>();

function parsed(template: string): ReturnType<typeof parse> {
  let program = parseCache.get(template);
  if (program === undefined) {
    program = parse(tokenize(template, { lstrip_blocks: true, trim_blocks: true }));
    if (parseCache.size >= PARSE_CACHE_MAX) parseCache.delete(parseCache.keys().next().value as string);
    parseCache.set(template, program);
  }
  return program;
}

// ---- plain data in ----------------------------------------------------------------------

const INVALID = Symbol("invalid");

function plainMessages(messages: ChatMessage[], fail: (cause: string) => never): Record<string, unknown>[] {
  if (!Array.isArray(messages)) fail("messages is not an array");
  if (messages.length > MAX_DATA_ITEMS) fail(`${messages.length} messages is over the limit of ${MAX_DATA_ITEMS}`);
  return messages.map((m, i) => {
    if (m === null || typeof m !== "object" || typeof m.role !== "string" || typeof m.content !== "string") {
      fail(`messages[${i}] is not { role: string, content: string }`);
    }
    return { role: m.role, content: m.content };
  });
}

/** A deep copy made only of JSON-like values, or INVALID. */
function plainData(v: unknown, depth: number, budget: { items: number }): unknown {
  if (--budget.items < 0 || depth > MAX_DATA_DEPTH) return INVALID;
  if (v === null || typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") return Number.isFinite(v) ? v : INVALID;
  if (Array.isArray(v)) {
    const out = v.map((x) => plainData(x, depth + 1, budget));
    return out.includes(INVALID) ? INVALID : out;
  }
  if (typeof v === "object") {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return INVALID;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const c = plainData(x, depth + 1, budget);
      if (c === INVALID) return INVALID;
      out[k] = c;
    }
    return out;
  }
  return INVALID;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---- strftime_now (Python's, C locale, local time) ----------------------------------------

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

function strftime(d: Date, fmt: string): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  const dayOfYear = Math.floor((Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) - Date.UTC(d.getFullYear(), 0, 1)) / 86_400_000) + 1;
  return fmt.replace(/%[a-zA-Z%]/g, (t) => {
    switch (t[1]) {
      case "Y": return String(d.getFullYear());
      case "y": return p2(d.getFullYear() % 100);
      case "m": return p2(d.getMonth() + 1);
      case "d": return p2(d.getDate());
      case "e": return String(d.getDate()).padStart(2, " ");
      case "H": return p2(d.getHours());
      case "I": return p2(d.getHours() % 12 || 12);
      case "p": return d.getHours() < 12 ? "AM" : "PM";
      case "M": return p2(d.getMinutes());
      case "S": return p2(d.getSeconds());
      case "j": return String(dayOfYear).padStart(3, "0");
      case "a": return DAYS[d.getDay()]!.slice(0, 3);
      case "A": return DAYS[d.getDay()]!;
      case "b": return MONTHS[d.getMonth()]!.slice(0, 3);
      case "B": return MONTHS[d.getMonth()]!;
      case "%": return "%";
      default: return t;
    }
  });
}
