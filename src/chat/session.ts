/**
 * A chat session: a conversation over its own context, rendered with the model's chat template,
 * whose next turn evaluates only the tokens that follow what is already in the KV cache.
 *
 *   const session = model.createChatSession({ systemPrompt: "You are terse." });
 *   const { text } = await session.prompt("What is the capital of France?");
 *   for await (const { text } of session.promptStream("And of Germany?")) process.stdout.write(text);
 *   session.dispose();
 *
 * Each turn renders the whole history with the template (templates may render earlier turns a
 * little differently once a later turn exists), tokenizes it, and generates with `reuseCache`:
 * the context keeps the longest common token prefix and evaluates the rest. When the history no
 * longer fits in the context (with room for the reply), the oldest turns after the system prompt
 * are dropped, a user/assistant pair at a time, before anything is generated.
 */
import { KilnError } from "../errors";
import type { Context, ContextOptions, GeneratedPiece, GenerateOptions, GenerateResult } from "../runtime/context";
import type { Model } from "../runtime/model";
import type { ChatMessage } from "./template";

/**
 * Options of `model.createChatSession`: the conversation's start, its template, and the options of
 * the context it creates.
 */
export interface ChatSessionOptions extends ContextOptions {
  /** The first message, role "system" (kept when old turns are dropped). */
  systemPrompt?: string;
  /** A Jinja chat template, or a built-in name ("chatml", "gemma", "llama3"); default: the model's own. */
  chatTemplate?: string;
  /** Earlier turns to continue from (user/assistant messages, oldest first; no system message). */
  history?: ChatMessage[];
}

/**
 * What `session.prompt` resolves to (and `promptStream` returns): the generation's result plus
 * how many old turns were dropped to fit.
 */
export interface ChatReply extends GenerateResult {
  /** Turns dropped from the start of the history to fit this turn in the context. */
  droppedMessages: number;
}

/** Room kept for the reply when deciding whether the history fits (unless maxTokens says less). */
const DEFAULT_REPLY_ROOM = 256;

/**
 * A conversation over its own context, rendered with a chat template; each turn evaluates only
 * the tokens after what the KV cache already holds. Create it with `model.createChatSession()`.
 */
export class ChatSession {
  /** The model it runs on. */
  readonly model: Model;
  /** Its own context (KV cache): `context.lastTimings`, `context.nPast`, … of the conversation. */
  readonly context: Context;
  readonly #system: ChatMessage | null;
  readonly #template: string | undefined;
  readonly #initial: ChatMessage[];
  #history: ChatMessage[];
  #disposed = false;

  /** @internal use model.createChatSession(). */
  constructor(model: Model, opts: ChatSessionOptions = {}) {
    const { systemPrompt, chatTemplate, history, ...contextOptions } = opts;
    this.model = model;
    this.#system = systemPrompt === undefined ? null : { role: "system", content: systemPrompt };
    this.#template = chatTemplate;
    // Fail now, not at the first turn, when the model has no template and none was given.
    model.applyChatTemplate(this.#system ? [this.#system, { role: "user", content: "" }] : [{ role: "user", content: "" }], { chatTemplate });
    for (const m of history ?? []) {
      if (!m || typeof m.role !== "string" || typeof m.content !== "string" || m.role === "system") {
        throw new KilnError("BAD_OPTION", "history: each message must be { role: \"user\" | \"assistant\", content: string } (the system prompt is systemPrompt)");
      }
    }
    this.#initial = (history ?? []).map((m) => ({ role: m.role, content: m.content }));
    this.#history = [...(this.#system ? [this.#system] : []), ...this.#initial];
    this.context = model.createContext(contextOptions);
  }

  /** The conversation so far (a copy), system prompt first. */
  get history(): ChatMessage[] {
    return this.#history.map((m) => ({ ...m }));
  }

  /** Forgets the conversation (the system prompt stays) and the KV cache. */
  reset(): void {
    this.#guard("reset");
    this.context.reset();
    this.#history = this.#system ? [this.#system] : [];
  }

  /** Sends a user message and returns the whole reply. */
  async prompt(text: string, opts: GenerateOptions = {}): Promise<ChatReply> {
    const it = this.promptStream(text, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Sends a user message and streams the reply; the history gets both when the reply ends. */
  async *promptStream(text: string, opts: GenerateOptions = {}): AsyncGenerator<GeneratedPiece, ChatReply> {
    this.#guard("prompt");
    if (typeof text !== "string") throw new KilnError("BAD_OPTION", "prompt: the user message must be a string");
    const user: ChatMessage = { role: "user", content: text };
    const room = Math.min(opts.maxTokens ?? DEFAULT_REPLY_ROOM, DEFAULT_REPLY_ROOM);
    let turns = [...this.#history.slice(this.#system ? 1 : 0), user];
    let dropped = 0;
    let ids = this.#tokens(turns);
    // Too long: drop the oldest turns (after the system prompt), a user/assistant pair at a time.
    while (ids.length + room > this.context.contextLength && turns.length > 1) {
      const n = turns.length >= 3 && turns[0]!.role === "user" && turns[1]!.role === "assistant" ? 2 : 1;
      turns = turns.slice(n);
      dropped += n;
      ids = this.#tokens(turns);
    }
    if (ids.length >= this.context.contextLength) {
      throw new KilnError("PROMPT_TOO_LONG", `prompt: the system prompt and this message take ${ids.length} tokens; the session's context holds ${this.context.contextLength}`);
    }
    const result = yield* this.context.generate(ids, { ...opts, reuseCache: true });
    this.#history = [...(this.#system ? [this.#system] : []), ...turns, { role: "assistant", content: result.text }];
    return { ...result, droppedMessages: dropped };
  }

  /** Token ids of the system prompt + `turns`, rendered with the generation prompt. */
  #tokens(turns: ChatMessage[]): number[] {
    return this.model.chatPromptTokens(this.#system ? [this.#system, ...turns] : turns, { chatTemplate: this.#template });
  }

  #guard(what: string): void {
    if (this.#disposed) throw new KilnError("DISPOSED", `${what}: this chat session was disposed`);
  }

  /** Frees the session's context. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.context.dispose();
  }

  /** Same as dispose(): lets `using` dispose it at the end of a block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
