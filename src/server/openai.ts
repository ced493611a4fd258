/**
 * The OpenAI wire format kiln serve speaks: request validation (every field checked by type and
 * range, the first bad one named in a 400), the error shape, and the response objects.
 *
 * Only the fields below are read; unknown fields are ignored, as OpenAI's own server does for
 * forward compatibility. Limits are explicit: see LIMITS.
 */
import type { GenerateOptions } from "../runtime/context";

export const LIMITS = {
  /** Largest request body accepted (413 beyond). */
  bodyBytes: 4 * 2 ** 20,
  /** Deepest nesting of arrays/objects in a body (400 beyond). */
  depth: 64,
  /** Most chat messages in one request. */
  messages: 1024,
  /** Most stop strings (OpenAI allows 4). */
  stops: 4,
  /** Most logit_bias entries. */
  logitBias: 1024,
} as const;

/** An error the client caused (or a queue that is full): becomes `{ error: {...} }` with `status`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

export function errorBody(e: ApiError): { error: { message: string; type: string; param: string | null; code: string | null } } {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

const bad = (param: string, message: string): ApiError => new ApiError(400, `${param}: ${message}`, "invalid_request_error", param);

/** Depth of the deepest array/object nesting in `text` (JSON), counted without parsing; stops early past `max`. */
export function jsonDepth(text: string, max: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest) deepest = depth;
      if (deepest > max) return deepest;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}

/** Decodes a body: UTF-8 (strict), nesting depth, JSON, an object at the top. */
export function parseBody(bytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, "the request body is not valid UTF-8");
  }
  if (jsonDepth(text, LIMITS.depth) > LIMITS.depth) throw new ApiError(400, `the request body nests deeper than ${LIMITS.depth} levels`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ApiError(400, "the request body must be a JSON object");
  return v as Record<string, unknown>;
}

export type ChatMessage = { role: string; content: string };

/** A validated request, in the engine's terms. */
export interface CompletionRequest {
  kind: "chat" | "text";
  model: string | undefined;
  /** chat: the messages; text: the prompt. */
  messages?: ChatMessage[];
  prompt?: string;
  stream: boolean;
  includeUsage: boolean;
  /** Generate options (maxTokens may be undefined: the engine fills in the room left). */
  options: GenerateOptions;
}

function num(body: Record<string, unknown>, key: string, lo: number, hi: number, int = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw bad(key, `must be a number, got ${JSON.stringify(v)?.slice(0, 40)}`);
  if (int && !Number.isInteger(v)) throw bad(key, `must be an integer, got ${v}`);
  if (v < lo || v > hi) throw bad(key, `must be in [${lo}, ${hi}], got ${v}`);
  return v;
}

function content(v: unknown, param: string): string {
  if (typeof v === "string") return v;
  // The array form: text parts only.
  if (Array.isArray(v)) {
    return v.map((p, i) => {
      if (typeof p !== "object" || p === null || (p as { type?: unknown }).type !== "text" || typeof (p as { text?: unknown }).text !== "string") {
        throw bad(`${param}[${i}]`, "only {type: \"text\", text} content parts are supported");
      }
      return (p as { text: string }).text;
    }).join("");
  }
  if (v === null || v === undefined) return "";
  throw bad(param, "must be a string or an array of text parts");
}

/**
 * Validates a /v1/chat/completions (kind "chat") or /v1/completions (kind "text") body.
 * `maxTokensLimit` is the slots' context length: a larger max_tokens can never be honoured.
 */
export function parseCompletionRequest(body: Record<string, unknown>, kind: "chat" | "text", maxTokensLimit: number): CompletionRequest {
  const model = body.model;
  if (model !== undefined && typeof model !== "string") throw bad("model", "must be a string");
  const req: CompletionRequest = { kind, model, stream: false, includeUsage: false, options: {} };
  if (kind === "chat") {
    const m = body.messages;
    if (!Array.isArray(m) || m.length === 0) throw bad("messages", "must be a non-empty array");
    if (m.length > LIMITS.messages) throw bad("messages", `at most ${LIMITS.messages} messages`);
    req.messages = m.map((x, i) => {
      if (typeof x !== "object" || x === null || Array.isArray(x)) throw bad(`messages[${i}]`, "must be an object");
      const role = (x as { role?: unknown }).role;
      if (typeof role !== "string" || !["system", "developer", "user", "assistant"].includes(role)) {
        throw bad(`messages[${i}].role`, "must be system, developer, user or assistant");
      }
      return { role: role === "developer" ? "system" : role, content: content((x as { content?: unknown }).content, `messages[${i}].content`) };
    });
  } else {
    const p = body.prompt;
    if (typeof p === "string") req.prompt = p;
    else if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") req.prompt = p[0];
    else throw bad("prompt", "must be a string (one prompt per request)");
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") throw bad("stream", "must be a boolean");
  req.stream = body.stream === true;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object" || Array.isArray(so)) throw bad("stream_options", "must be an object");
    const iu = (so as { include_usage?: unknown }).include_usage;
    if (iu !== undefined && typeof iu !== "boolean") throw bad("stream_options.include_usage", "must be a boolean");
    req.includeUsage = iu === true;
  }
  const n = num(body, "n", 1, 1, true);
  void n; // n must be 1: one choice per request
  const o = req.options;
  const maxKey = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens";
  o.maxTokens = num(body, maxKey, 1, maxTokensLimit, true);
  o.temperature = num(body, "temperature", 0, 2);
  o.topP = num(body, "top_p", 0, 1);
  o.seed = num(body, "seed", -(2 ** 53), 2 ** 53, true);
  if (o.seed !== undefined) o.seed = o.seed >>> 0;
  o.presencePenalty = num(body, "presence_penalty", -2, 2);
  o.frequencyPenalty = num(body, "frequency_penalty", -2, 2);
  const stop = body.stop;
  if (typeof stop === "string") o.stop = [stop];
  else if (Array.isArray(stop)) {
    if (stop.length > LIMITS.stops || !stop.every((s) => typeof s === "string" && s.length > 0)) throw bad("stop", `must be a string or up to ${LIMITS.stops} non-empty strings`);
    o.stop = stop as string[];
  } else if (stop !== undefined && stop !== null) throw bad("stop", "must be a string or an array of strings");
  const lb = body.logit_bias;
  if (lb !== undefined && lb !== null) {
    if (typeof lb !== "object" || Array.isArray(lb)) throw bad("logit_bias", "must be an object of token id → bias");
    const entries = Object.entries(lb);
    if (entries.length > LIMITS.logitBias) throw bad("logit_bias", `at most ${LIMITS.logitBias} entries`);
    const out: Record<number, number> = {};
    for (const [k, v] of entries) {
      if (!/^\d{1,9}$/.test(k)) throw bad("logit_bias", `keys must be token ids, got "${k.slice(0, 20)}"`);
      if (typeof v !== "number" || !Number.isFinite(v) || v < -100 || v > 100) throw bad("logit_bias", `biases must be numbers in [-100, 100]`);
      out[Number(k)] = v;
    }
    o.logitBias = out;
  }
  const rf = body.response_format;
  if (rf !== undefined && rf !== null) {
    if (typeof rf !== "object" || Array.isArray(rf)) throw bad("response_format", "must be an object");
    const t = (rf as { type?: unknown }).type;
    if (t === "json_object") o.json = true;
    else if (t === "json_schema") {
      const js = (rf as { json_schema?: unknown }).json_schema;
      const schema = typeof js === "object" && js !== null ? (js as { schema?: unknown }).schema : undefined;
      if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw bad("response_format.json_schema.schema", "must be a JSON schema object");
      o.jsonSchema = schema as Record<string, unknown>;
    } else if (t !== "text") throw bad("response_format.type", "must be text, json_object or json_schema");
  }
  // Drop undefined keys: generate's defaults apply.
  for (const k of Object.keys(o) as (keyof GenerateOptions)[]) if (o[k] === undefined) delete o[k];
  return req;
}

export type FinishReason = "stop" | "length";

/** kiln's finish reasons in OpenAI's words (an abort never reaches a client: it left). */
export function finishReason(r: "stop" | "length" | "eos" | "abort"): FinishReason {
  return r === "length" ? "length" : "stop";
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usage(promptTokens: number, cachedTokens: number, completionTokens: number): Usage {
  const prompt = promptTokens + cachedTokens;
  return { prompt_tokens: prompt, completion_tokens: completionTokens, total_tokens: prompt + completionTokens, prompt_tokens_details: { cached_tokens: cachedTokens } };
}
