/**
 * The text side of a generation, token by token: incremental detokenization, stop strings (the
 * text never contains them; up to the longest one's length is held back until it cannot start a
 * stop), end-of-generation tokens, the token limit, and a JSON constraint's completion. Context
 * (one sequence) and the batched scheduler (many) both feed sampled tokens through a Reply, so a
 * reply ends the same way whichever runs it.
 */
import type { TokenConstraint } from "../chat/constrain";
import type { Tokenizer } from "../tokenizer";

/** Why a generation ended: "eos" an end-of-generation token, "stop" a stop string (or a complete JSON value), "length" maxTokens or the context's end, "abort" the signal fired. */
export type FinishReason = "stop" | "length" | "eos" | "abort";

export interface ReplyOptions {
  maxTokens: number;
  stop?: readonly string[];
  renderSpecial?: boolean;
  /** A constrained reply ends ("stop") where its value is complete. */
  constraint?: TokenConstraint | null;
}

export class Reply {
  /** Generated token ids (end-of-generation tokens are not included). */
  readonly tokens: number[] = [];
  text = "";
  /** Set once the reply has ended; "length" until something else ends it. */
  finishReason: FinishReason = "length";
  done = false;
  #emitted = 0;
  readonly #stops: string[];
  readonly #holdBack: number;
  readonly #stream: ReturnType<Tokenizer["createStreamDecoder"]>;
  readonly #tokenizer: Tokenizer;
  readonly #maxTokens: number;
  readonly #constraint: TokenConstraint | null;

  constructor(tokenizer: Tokenizer, o: ReplyOptions) {
    this.#tokenizer = tokenizer;
    this.#stops = (o.stop ?? []).filter((s) => s.length > 0);
    this.#holdBack = Math.max(0, ...this.#stops.map((s) => s.length - 1));
    this.#stream = tokenizer.createStreamDecoder({ skipSpecial: !o.renderSpecial });
    this.#maxTokens = o.maxTokens;
    this.#constraint = o.constraint ?? null;
    if (o.maxTokens <= 0) this.done = true;
  }

  /**
   * Adds a sampled token. Returns the text it completes (possibly empty), or null when there is
   * nothing to report for it (an end-of-generation token, one past the limit, or a stop string
   * that ends the text exactly where it was); `done` says whether the reply has ended.
   */
  push(token: number): string | null {
    if (this.done) return null;
    if (this.tokens.length >= this.#maxTokens) {
      this.done = true;
      return null;
    }
    if (this.#tokenizer.isEog(token)) {
      this.end(this.#constraint ? "stop" : "eos"); // a constrained value ends where it is complete
      return null;
    }
    this.tokens.push(token);
    this.text += this.#stream.push(token);
    const stopAt = firstStop(this.text, this.#stops);
    let piece: string;
    if (stopAt >= 0) {
      this.text = this.text.slice(0, stopAt);
      piece = this.text.slice(this.#emitted);
      this.#emitted = this.text.length;
      this.end("stop");
      return piece.length > 0 ? piece : null;
    }
    const safe = Math.max(this.#emitted, this.text.length - this.#holdBack);
    piece = this.text.slice(this.#emitted, safe);
    this.#emitted = safe;
    if (this.#constraint && !this.#constraint.canContinue) this.end("stop"); // complete: nothing may follow
    else if (this.tokens.length >= this.#maxTokens) this.done = true;
    return piece;
  }

  /** Ends the reply (an abort, or the context filling up); returns nothing. */
  end(reason: FinishReason): void {
    if (this.done) return;
    this.finishReason = reason;
    this.done = true;
  }

  /**
   * The text still held back or pending in the decoder, released once the reply is over (none
   * after a stop string: what was held back was the stop's beginning).
   */
  flush(): string {
    if (this.finishReason === "stop") return "";
    this.text += this.#stream.flush();
    const piece = this.text.slice(this.#emitted);
    this.#emitted = this.text.length;
    return piece;
  }
}

export function firstStop(text: string, stops: readonly string[]): number {
  let at = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at;
}
