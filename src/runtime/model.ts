/**
 * The runtime face of a model: a GGUF file mapped read-only and validated, its weights,
 * tokenizer and hyper-parameters — everything immutable and shared — plus contexts (KV cache and
 * run state) created from it.
 *
 *   const model = await loadModel("models/gemma-3-270m-Q4_K_M.gguf");
 *   for await (const piece of model.generate("Once upon a time", { maxTokens: 32 })) process.stdout.write(piece.text);
 *   model.dispose();
 *
 * `model.generate/complete/eval/reset` use the model's default context (created on first use
 * from the LoadOptions); `model.createContext()` makes more, each with its own KV cache. The
 * mapping is released when the model and its last context are disposed.
 */
import * as cpu from "../backends/cpu";
import type { Backend } from "../backends/backend";
import { CPU_BACKEND } from "../backends/cpu-backend";
import { selectBackend, type DeviceOption } from "../backends/select";
import { KilnError } from "../errors";
import { parseGGUF, type GGUFFile } from "../gguf";
import { architectureOf, type Architecture } from "../models/arch";
import { ModelError, type HParams } from "../models/hparams";
import { planState } from "../models/state";
import type { Device, DType, NativeBuffer, Tensor } from "../tensor";
import { createTokenizer, type Tokenizer } from "../tokenizer";
import { ChatSession, type ChatSessionOptions } from "../chat/session";
import { BUILTIN_CHAT_TEMPLATES, chatTemplateOf, renderChatTemplate, type ChatMessage } from "../chat/template";
import { Batch, type BatchOptions } from "./batch";
import { Context, memoryOf, resolveContextOptions, type ContextMemory, type ContextOptions, type GenerateOptions, type GeneratedPiece, type GenerateResult, type Timings } from "./context";
import { MappedFile } from "./mapped-file";
import { checkThreads } from "./threads";
import { packLayersDefault } from "../ffi/library";

export interface LoadOptions extends ContextOptions {
  /**
   * Kernel threads for this model's contexts (default: physical cores). Nothing process-wide
   * changes at load: each context sets the kernel pool to its count when it computes.
   */
  threads?: number;
  /**
   * Copy the output head into the 16-row interleaved layout at load (default true, where the
   * CPU build has one for its type: Q8_0/Q4_0/Q4_1 on AVX-512 VNNI). Decode and speculative
   * verification then read the copy: verified rows cost a fraction of a decode step's head.
   * The copy has the tensor's size; the file's pages of the head are then read only by
   * embedding lookups. false keeps every weight in the mapped file.
   */
  packOutputHead?: boolean;
  /**
   * Copy the layers' matmul weights into the same packed layout at load, where the CPU build has
   * one for their type and shape (Q8_0/Q4_0/Q4_1, and Q5_0/Q5_1/Q4_K where the AMX prefill is off, on AVX-512 VNNI, rows a multiple of 16): decode
   * then reads each weight as one sequential stream with a quarter of the instructions per
   * multiply-add, and prefill on AMX takes its tiles from the copy unconverted. The copies share
   * one buffer of 2 MiB pages. Default: where measured faster (Intel, AMD Zen 4;
   * `packLayersDefault()`, KILN_PACK_LAYERS=0|1 overrides it). The copies replace the
   * file's pages in memory (those are dropped from the resident set as each tensor is packed), so
   * resident memory stays about the model's size. Loading pays for it: the copies are fresh memory
   * the OS zeroes, so a 1.1B Q4_0 model loads in ~0.3–1.8 s instead of ~0.1 s (docs/tuning.md);
   * pass false where a fast cold start matters more than prefill speed.
   */
  packLayers?: boolean;
  /**
   * Where the model runs: "auto" (default: the first NVIDIA GPU when a driver is found, else the
   * CPU), "cpu", "cuda" or "cuda:<ordinal>" (docs/gpu.md). On a GPU the weights are uploaded
   * once in their quantized form and contexts keep their KV cache there.
   */
  device?: DeviceOption;
}

/**
 * @internal What a model's contexts share: the mapping, weights, tokenizer. Reference-counted:
 * the model holds one reference and each live context one; the last release unmaps the file.
 */
export interface ModelCore {
  readonly path: string;
  readonly file: GGUFFile;
  readonly hp: HParams;
  readonly arch: Architecture;
  readonly weights: unknown;
  readonly tokenizer: Tokenizer;
  readonly weightTypes: readonly DType[];
  /** The backend the weights were placed on; contexts and batches run their states on it. */
  readonly backend: Backend;
  /** Multiply-adds × 2 of one token's matmuls through the blocks (the output head, computed for the last row only, excluded). */
  readonly flopsPerToken: number;
  readonly loadMs: number;
  readonly released: boolean;
  /** Layer weights read from packed copies (LoadOptions.packLayers). */
  readonly packedLayerWeights: number;
  retain(owner: object): void;
  release(owner: object): void;
}

class SharedWeights implements ModelCore {
  readonly path: string;
  file!: GGUFFile;
  hp!: HParams;
  arch!: Architecture;
  weights: unknown;
  tokenizer!: Tokenizer;
  weightTypes!: readonly DType[];
  backend: Backend = CPU_BACKEND;
  flopsPerToken = 0;
  loadMs = 0;
  readonly #mapped: MappedFile;
  #head: Tensor | undefined;
  /** Layer weights read from packed copies (LoadOptions.packLayers), freed with the model. */
  readonly #packedLayers: Tensor[] = [];
  /** The one buffer those copies live in (cpu.packArena). */
  #packArena: NativeBuffer | null = null;
  readonly #owners = new Set<object>();
  #released = false;

  /** Maps the file; the rest of loading is `stages()`. */
  private constructor(path: string) {
    this.path = path;
    this.#mapped = new MappedFile(path);
  }

  /** Loads synchronously (new Model). */
  static loadSync(path: string, opts: LoadOptions): SharedWeights {
    const w = new SharedWeights(path);
    w.#run(() => {
      for (const _ of w.#stages(opts));
    });
    return w;
  }

  /** Loads with a turn of the event loop between stages (parse, tokenizer, output-head packing): loadModel. */
  static async load(path: string, opts: LoadOptions): Promise<SharedWeights> {
    const w = new SharedWeights(path);
    const it = w.#stages(opts);
    for (;;) {
      let done: boolean | undefined;
      w.#run(() => (done = it.next().done));
      if (done) return w;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #run(step: () => void): void {
    try {
      step();
    } catch (e) {
      this.#free();
      throw e;
    }
  }

  /** Each stage holds the thread for one piece of loading (Gemma 3 270M: ~50–150 ms each). */
  *#stages(opts: LoadOptions): Generator<void> {
    const path = this.path;
    this.file = parseGGUF(this.#mapped.bytes, { fileName: path });
    this.arch = architectureOf(this.file);
    this.hp = this.arch.readHParams(this.file);
    this.weights = this.arch.loadWeights(this.file, this.#mapped.bytes, this.hp);
    const tensors = this.arch.tensors(this.weights);
    this.weightTypes = [...new Set(tensors.map((t) => t.dtype))];
    this.#head = this.arch.outputHead(this.weights);
    this.backend = selectBackend(opts.device);
    if (this.backend !== CPU_BACKEND) {
      for (const t of this.weightTypes) {
        if (!this.backend.supports("linear", t)) throw new ModelError("UNSUPPORTED_TENSOR_TYPE", `${this.backend.description} does not run ${t} weights`, path);
      }
      yield;
      if (this.backend.stageWeights) for (const _ of this.backend.stageWeights(tensors)) yield;
      this.weights = this.backend.placeWeights(this.weights);
      this.#head = undefined;
    }
    this.flopsPerToken = 2 * tensors.filter((t) => t.rank === 2 && t.name.startsWith("blk.")).reduce((a, t) => a + t.numel, 0);
    yield;
    this.tokenizer = createTokenizer(this.file.metadata);
    if (this.tokenizer.vocabSize !== this.hp.nVocab) {
      throw new ModelError("VOCAB_MISMATCH", `tokenizer has ${this.tokenizer.vocabSize} tokens but token_embd has ${this.hp.nVocab} rows`, path);
    }
    if (this.#head && (opts.packOutputHead ?? true)) {
      yield;
      cpu.packRows(this.#head, { fileMapping: this.#mapped.bytes });
    }
    if (this.backend === CPU_BACKEND && (opts.packLayers ?? packLayersDefault().pack)) {
      const toPack = tensors.filter((t) => t.name.startsWith("blk.") && cpu.packUnsupportedReason(t) === null);
      const arena = cpu.packArena(toPack);
      this.#packArena = arena?.buffer ?? null;
      for (let i = 0; i < toPack.length; i++) {
        yield; // one tensor per turn of the event loop (TinyLlama's largest: ~10 ms)
        cpu.packRows(toPack[i]!, { fileMapping: this.#mapped.bytes, into: arena!.slots[i] });
        this.#packedLayers.push(toPack[i]!);
      }
    }
  }

  get released(): boolean {
    return this.#released;
  }

  get headPacked(): boolean {
    return this.#head !== undefined && cpu.packedCopy(this.#head) !== null;
  }

  get packedLayerWeights(): number {
    return this.#packedLayers.length;
  }

  retain(owner: object): void {
    if (this.#released) throw new KilnError("DISPOSED", `${this.path}: the model was released`);
    this.#owners.add(owner);
  }

  release(owner: object): void {
    this.#owners.delete(owner);
    if (this.#owners.size === 0) this.#free();
  }

  #free(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#head) cpu.unpackRows(this.#head);
    for (const t of this.#packedLayers.splice(0)) cpu.unpackRows(t);
    this.#packArena?.free();
    this.#packArena = null;
    this.backend.dispose();
    this.#mapped.close();
  }
}

/**
 * A loaded GGUF model: the file mapped read-only and validated, its weights (read in place),
 * tokenizer and hyper-parameters — immutable, shared by every context created from it. Load it
 * with `loadModel`; `generate`, `complete`, `eval` and `reset` use its default context.
 */
export class Model {
  /** The file it was loaded from. */
  readonly path: string;
  /** The parsed GGUF file: metadata and tensor table. */
  readonly file: GGUFFile;
  /** Hyper-parameters. */
  readonly hp: HParams;
  /** The architecture module that runs it (src/models/arch.ts: hyper-parameters, weights, forward). */
  readonly arch: Architecture;
  /** The tokenizer built from the file's metadata. */
  readonly tokenizer: Tokenizer;
  /** How long loading took, in ms. */
  readonly loadMs: number;
  /** Threads of this model's contexts unless a context says otherwise. */
  readonly threads: number | undefined;
  /** The device its weights live on and its contexts run on (LoadOptions.device). */
  readonly device: Device;
  readonly #core: SharedWeights;
  readonly #defaultOptions: ContextOptions;
  #default: Context | undefined;
  #disposed = false;
  readonly #token = {};

  /** Loads synchronously; prefer `await loadModel(path, opts)`, which yields to the event loop between stages. */
  constructor(path: string, opts: LoadOptions = {}, /** @internal */ loaded?: { core: SharedWeights; t0: number }) {
    const t0 = loaded?.t0 ?? performance.now();
    this.threads = opts.threads === undefined ? undefined : checkThreads(opts.threads);
    const core = loaded?.core ?? SharedWeights.loadSync(path, opts);
    this.#core = core;
    this.path = path;
    this.file = core.file;
    this.hp = core.hp;
    this.arch = core.arch;
    this.tokenizer = core.tokenizer;
    this.device = core.backend.device;
    this.#defaultOptions = definedOnly(opts);
    core.retain(this.#token);
    try {
      // Options of the default context are checked now (a bad contextLength fails the load), its buffers are made on first use.
      planState(this.hp, resolveContextOptions(core, this.#defaultOptions, this.threads).state);
    } catch (e) {
      core.release(this.#token);
      throw e;
    }
    this.loadMs = performance.now() - t0;
    core.loadMs = this.loadMs;
    collected.register(this, { core, token: this.#token }, this.#token);
  }

  #guard(what: string): void {
    if (this.#disposed) throw new KilnError("DISPOSED", `${what}: the model ${this.path} was disposed`);
  }

  /**
   * A new context over this model's weights: its own KV cache and buffers (what they take is
   * `contextMemory(opts)`). Options not given are the model's LoadOptions, then the defaults.
   */
  createContext(opts: ContextOptions = {}): Context {
    this.#guard("createContext");
    return new Context(this, this.#core, { ...this.#defaultOptions, ...definedOnly(opts) }, this.threads);
  }

  /**
   * Several sequences generated together, one forward call per step for all of them (continuous
   * batching; what kiln serve runs). Each sequence has `contextLength` positions of one shared KV cache.
   */
  createBatch(opts: BatchOptions = {}): Batch {
    this.#guard("createBatch");
    return new Batch(this, this.#core, { ...this.#defaultOptions, ...definedOnly(opts) }, this.threads);
  }

  /** What a context with these options would take, computed without allocating (throws CONTEXT_TOO_LARGE over the budget). */
  contextMemory(opts: ContextOptions = {}): ContextMemory {
    this.#guard("contextMemory");
    return memoryOf(planState(this.hp, resolveContextOptions(this.#core, { ...this.#defaultOptions, ...definedOnly(opts) }, this.threads).state));
  }

  /** The context model.generate/complete/eval use (created on first use from the LoadOptions). */
  get defaultContext(): Context {
    this.#guard("defaultContext");
    this.#default ??= this.createContext();
    return this.#default;
  }

  /** The default context's length (the LoadOptions' contextLength, or its default). */
  get contextLength(): number {
    return this.#default?.contextLength ?? resolveContextOptions(this.#core, this.#defaultOptions, this.threads).state.nCtx;
  }

  /** Transformer blocks. */
  get nLayer(): number {
    return this.hp.nLayer;
  }

  /** How many layer weights are read from packed copies (LoadOptions.packLayers); 0 when none. */
  get packedLayerWeights(): number {
    return this.#core.packedLayerWeights;
  }

  /** Whether the output head is read from a packed copy (LoadOptions.packOutputHead). */
  get outputHeadPacked(): boolean {
    return this.#core.headPacked;
  }

  /** Whether dispose() was called. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Renders `messages` with a chat template exactly as Hugging Face transformers'
   * `apply_chat_template` does: `chatTemplate` (a Jinja template or a built-in name: "chatml",
   * "gemma", "llama3"), else the model's own `tokenizer.chat_template`; the model's BOS/EOS text
   * are `bos_token`/`eos_token`. A model without a template and no `chatTemplate` is a KilnError
   * CHAT_TEMPLATE.
   */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; chatTemplate?: string } = {}): string {
    this.#guard("applyChatTemplate");
    const builtin = opts.chatTemplate !== undefined && Object.hasOwn(BUILTIN_CHAT_TEMPLATES, opts.chatTemplate) ? BUILTIN_CHAT_TEMPLATES[opts.chatTemplate as keyof typeof BUILTIN_CHAT_TEMPLATES] : undefined;
    const template = builtin ?? opts.chatTemplate ?? chatTemplateOf(this.file.metadata);
    if (template === undefined) {
      throw new KilnError("CHAT_TEMPLATE", `${this.path} has no chat template (tokenizer.chat_template); pass chatTemplate: a Jinja template or one of ${Object.keys(BUILTIN_CHAT_TEMPLATES).join(", ")}`);
    }
    const name = builtin ? opts.chatTemplate! : opts.chatTemplate !== undefined ? "chatTemplate option" : `${this.path} tokenizer.chat_template`;
    const tk = this.tokenizer;
    const text = (id: number) => (id >= 0 ? tk.vocab.tokens[id] : undefined);
    return renderChatTemplate(template, messages, { addGenerationPrompt: opts.addGenerationPrompt ?? true, bosToken: text(tk.bos) ?? "", eosToken: text(tk.eos) ?? "", name });
  }

  /**
   * The token ids of `messages` rendered with the chat template (applyChatTemplate, with the
   * generation prompt), special-token text parsed. The template writes BOS itself when it wants
   * one ({{ bos_token }}); BOS is added only if the rendered text does not start with it.
   */
  chatPromptTokens(messages: ChatMessage[], opts: { chatTemplate?: string } = {}): number[] {
    const rendered = this.applyChatTemplate(messages, { addGenerationPrompt: true, chatTemplate: opts.chatTemplate });
    const tk = this.tokenizer;
    const bosText = tk.bos >= 0 ? tk.vocab.tokens[tk.bos] : undefined;
    return tk.encode(rendered, { addSpecial: !(bosText && rendered.startsWith(bosText)), parseSpecial: true });
  }

  /** A chat session over a new context of this model (see ChatSession). */
  createChatSession(opts: ChatSessionOptions = {}): ChatSession {
    this.#guard("createChatSession");
    return new ChatSession(this, opts);
  }

  /** Token ids of `text`; by default plain text, no BOS (llama.cpp's add_special=false, parse_special=false). */
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    this.#guard("tokenize");
    return this.tokenizer.encode(text, { addSpecial: opts.addSpecial ?? false, parseSpecial: opts.parseSpecial ?? false });
  }

  /** The text of token ids (`skipSpecial`: control tokens render as nothing). */
  detokenize(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    this.#guard("detokenize");
    return this.tokenizer.decode([...ids], opts);
  }

  /** Streams a continuation of `prompt` in the default context (see Context.generate). */
  async *generate(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedPiece, GenerateResult> {
    return yield* this.defaultContext.generate(prompt, opts);
  }

  /** The whole result of a generation in the default context. */
  async complete(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.defaultContext.complete(prompt, opts);
  }

  /** Appends tokens to the default context and returns the last `logitRows` rows of logits (see Context.eval). */
  eval(tokens: readonly number[] | Int32Array, logitRows = 1): Tensor {
    return this.defaultContext.eval(tokens, logitRows);
  }

  /** Forgets the default context's KV cache. */
  reset(): void {
    this.defaultContext.reset();
  }

  /** Timings of the default context's last generation. */
  get lastTimings(): Timings | undefined {
    return this.#default?.lastTimings;
  }

  /**
   * Disposes the default context and drops the model's hold on the weights; the file stays
   * mapped until every context created from the model is disposed too. Idempotent.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    collected.unregister(this.#token);
    this.#default?.dispose();
    this.#core.release(this.#token);
  }

  /** Same as dispose(): lets `using` dispose it at the end of a block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A model that is never disposed drops its hold on the weights once it is garbage-collected. */
const collected = new FinalizationRegistry(({ core, token }: { core: ModelCore; token: object }) => core.release(token));

/** The options that are set (an explicit `undefined` does not override a model's LoadOptions). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Loads a GGUF model (mapped read-only, validated), returning to the event loop between the
 * stages of loading. Nothing process-wide changes.
 */
export async function loadModel(path: string, opts: LoadOptions = {}): Promise<Model> {
  const t0 = performance.now();
  if (opts.threads !== undefined) checkThreads(opts.threads);
  return new Model(path, opts, { core: await SharedWeights.load(path, opts), t0 });
}
