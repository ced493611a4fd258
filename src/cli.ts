#!/usr/bin/env bun
/**
 * kiln's command line.
 *
 *   kiln generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
 *                 [--top-p P] [--min-p P] [--seed S] [--threads N] [--ctx N] [--kv-type f16|q8_0] [--stop S]... [--json]
 *                 [--speculative prompt-lookup|layer-skip|off | --draft PATH] [--max-draft N] [--fixed-depth] [--profile]
 *   kiln chat --model PATH [--system TEXT] [--temperature T] [--max-tokens N] [--json-schema FILE] [--chat-template NAME|FILE] [--threads N] [--ctx N] [--kv-type f16|q8_0]
 *   kiln tokenize --model PATH --text TEXT [--json] [--bos] [--special]
 *   kiln inspect PATH [--json]
 *   kiln serve --model PATH [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N] [--ctx N] [--kv-type f16|q8_0] [--threads N] [--api-key KEY] [--cors ORIGIN]
 *
 * `kiln bench` (kiln against llama.cpp) is not part of the published command: it lives in a
 * source checkout, where `bun run kiln bench …` (scripts/kiln.ts) adds it in front of this one.
 */
import { KV_TYPES, type KvType } from "./models/state";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { GGUFError, parseGGUF, type GGUFFile } from "./gguf";
import { ModelError } from "./models/hparams";
import { MappedFile } from "./runtime/mapped-file";
import { loadModel, type Model } from "./runtime/model";
import { formatProfile, profileDecode } from "./runtime/profile";

const USAGE = `usage:
  kiln generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
                [--min-p P] [--repeat-penalty R] [--seed S] [--threads N] [--ctx N] [--kv-type f16|q8_0] [--stop S]... [--json]
                [--speculative prompt-lookup|layer-skip|off | --draft PATH] [--max-draft N] [--fixed-depth] [--profile]
  kiln chat --model PATH [--system TEXT] [--temperature T] [--max-tokens N] [--seed S] [--json-schema FILE]
            [--chat-template chatml|gemma|llama3|FILE] [--threads N] [--ctx N] [--kv-type f16|q8_0]
            one user turn per line of standard input (a terminal or a pipe); /reset, /stats, /exit
  kiln tokenize --model PATH --text TEXT [--json] [--bos] [--special]
  kiln inspect PATH [--json]
  kiln serve --model PATH [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N] [--ctx N] [--kv-type f16|q8_0] [--threads N]
             [--api-key KEY] [--cors ORIGIN]
             an OpenAI-compatible HTTP server (docs/server.md); loopback unless --host says otherwise
  kiln COMMAND --help`;

class UsageError extends Error {}

/** --kv-type: one of the KV cache types the kernels read (src/models/state.ts KV_TYPES). */
function kvType(v: string | undefined): KvType | undefined {
  if (v === undefined) return undefined;
  if (!(KV_TYPES as readonly string[]).includes(v)) throw new UsageError(`--kv-type must be ${KV_TYPES.join(", ")}, got ${JSON.stringify(v)}`);
  return v as KvType;
}

function num(v: string | undefined, name: string, int = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (int && !Number.isInteger(n))) throw new UsageError(`--${name} must be ${int ? "an integer" : "a number"}, got "${v}"`);
  return n;
}

async function generate(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" }, prompt: { type: "string" }, "max-tokens": { type: "string" },
      temperature: { type: "string" }, "top-k": { type: "string" }, "top-p": { type: "string" }, "min-p": { type: "string" },
      "repeat-penalty": { type: "string" }, seed: { type: "string" }, threads: { type: "string" }, ctx: { type: "string" }, "kv-type": { type: "string" },
      stop: { type: "string", multiple: true }, json: { type: "boolean" },
      speculative: { type: "string" }, draft: { type: "string" }, "max-draft": { type: "string" }, "fixed-depth": { type: "boolean" },
      profile: { type: "boolean" },
    },
  });
  // --profile (or KILN_PROFILE=1): after generating, the per-op time breakdown of decode tokens.
  const profile = o.profile ?? process.env.KILN_PROFILE === "1";
  if (!o.model || o.prompt === undefined) throw new UsageError("generate needs --model and --prompt");
  const model = await loadModel(o.model, { threads: num(o.threads, "threads", true), contextLength: num(o.ctx, "ctx", true), kvType: kvType(o["kv-type"]) });
  let draftModel: Model | undefined;
  try {
    if (o.speculative && o.speculative !== "prompt-lookup" && o.speculative !== "layer-skip" && o.speculative !== "off") {
      throw new UsageError(`--speculative must be prompt-lookup, layer-skip or off (or use --draft PATH), got "${o.speculative}"`);
    }
    if (o.draft) draftModel = await loadModel(o.draft, { threads: num(o.threads, "threads", true), contextLength: model.contextLength });
    const draft = draftModel ?? (o.speculative === "off" ? undefined : (o.speculative as "prompt-lookup" | "layer-skip" | undefined));
    // No flag: the library default (adaptive prompt lookup when greedy); "off": plain decoding.
    const speculative = draft ? { draft, maxDraft: num(o["max-draft"], "max-draft", true), adaptive: !o["fixed-depth"] } : o.speculative === "off" ? (false as const) : undefined;
    const it = model.generate(o.prompt, {
      maxTokens: num(o["max-tokens"], "max-tokens", true) ?? 128,
      temperature: num(o.temperature, "temperature"),
      topK: num(o["top-k"], "top-k", true),
      topP: num(o["top-p"], "top-p"),
      minP: num(o["min-p"], "min-p"),
      repeatPenalty: num(o["repeat-penalty"], "repeat-penalty"),
      seed: num(o.seed, "seed", true),
      stop: o.stop,
      speculative,
    });
    for (;;) {
      const r = await it.next();
      if (r.done) {
        const prof = profile ? profilePrompt(model, o.prompt, r.value.tokens.length) : null;
        if (o.json) {
          const t = r.value.timings;
          console.log(JSON.stringify({
            text: r.value.text,
            tokens: r.value.tokens,
            finish_reason: r.value.finishReason,
            timings: {
              load_ms: t.loadMs,
              prompt_tokens: t.promptTokens,
              prompt_tokens_per_second: t.promptTokensPerSecond,
              generated_tokens: t.generatedTokens,
              generated_tokens_per_second: t.generatedTokensPerSecond,
            },
            ...(r.value.speculative ? { speculative: r.value.speculative } : {}),
            ...(prof ? { profile: prof } : {}),
          }));
        } else {
          process.stdout.write("\n");
          const sp = r.value.speculative;
          if (sp) {
            const be = sp.breakEvenAcceptance === null ? "n/a" : `${(sp.breakEvenAcceptance * 100).toFixed(0)}%`;
            console.error(`[speculative ${sp.drafter}: acceptance ${(sp.acceptanceRate * 100).toFixed(1)}% (break-even ${be}), drafted in ${sp.draftingSteps}/${sp.steps} steps, ${sp.tokensPerTargetForward.toFixed(2)} tokens per target forward, draft time ${(sp.draftTimeShare * 100).toFixed(1)}%, ${sp.effectiveTokensPerSecond.toFixed(1)} tok/s]`);
          }
          if (prof) console.error(formatProfile(prof, "per-op profile of decoding"));
        }
        break;
      }
      if (!o.json) process.stdout.write(r.value.text);
    }
  } finally {
    model.dispose();
    draftModel?.dispose();
  }
}

/** Profiles greedy decode steps after the generate prompt (the same tokens generate started from). */
function profilePrompt(model: Model, prompt: string, generated: number) {
  const ids = model.tokenize(prompt, { addSpecial: true, parseSpecial: true });
  const room = model.contextLength - ids.length - 2;
  if (room < 1) throw new UsageError(`--profile: the prompt leaves no room in the ${model.contextLength}-token context to profile a decode step`);
  return profileDecode(model.defaultContext, ids, Math.max(1, Math.min(16, room, Math.max(generated, 8))));
}

async function tokenize(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({ args: argv, options: { model: { type: "string" }, text: { type: "string" }, json: { type: "boolean" }, bos: { type: "boolean" }, special: { type: "boolean" } } });
  if (!o.model || o.text === undefined) throw new UsageError("tokenize needs --model and --text");
  const model = await loadModel(o.model, { contextLength: 16 });
  try {
    const ids = model.tokenize(o.text, { addSpecial: o.bos ?? false, parseSpecial: o.special ?? false });
    console.log(o.json ? JSON.stringify({ ids }) : ids.join(" "));
  } finally {
    model.dispose();
  }
}

function describeValue(v: { type: number; value: unknown }): string {
  if (Array.isArray(v.value) || ArrayBuffer.isView(v.value)) {
    const arr = v.value as ArrayLike<unknown>;
    return `[${arr.length} items: ${Array.from({ length: Math.min(arr.length, 4) }, (_, i) => JSON.stringify(String(arr[i]))).join(", ")}${arr.length > 4 ? ", …" : ""}]`;
  }
  const s = typeof v.value === "bigint" ? v.value.toString() : JSON.stringify(v.value);
  return s.length > 120 ? s.slice(0, 117) + "…" : s;
}

function inspect(argv: string[]): void {
  const { values: o, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: "boolean" } } });
  const path = positionals[0];
  if (!path) throw new UsageError("inspect needs a PATH");
  const mapped = new MappedFile(path);
  try {
    const file: GGUFFile = parseGGUF(mapped.bytes, { fileName: path, allowUnsupportedTypes: true });
    const arch = file.metadata.get("general.architecture")?.value;
    const types = new Map<string, number>();
    for (const t of file.tensors) types.set(t.typeName, (types.get(t.typeName) ?? 0) + 1);
    if (o.json) {
      console.log(JSON.stringify({
        version: file.version, architecture: arch, metadata: Object.fromEntries([...file.metadata].map(([k, v]) => [k, describeValue(v)])),
        tensors: file.tensors.map((t) => ({ name: t.name, type: t.typeName, dims: t.dims, offset: t.offset, bytes: t.nbytes })),
      }));
      return;
    }
    console.log(`${path}: GGUF v${file.version}, ${(file.fileSize / 2 ** 20).toFixed(1)} MiB, architecture ${arch}`);
    console.log(`\nmetadata (${file.metadata.size} keys):`);
    for (const [k, v] of file.metadata) console.log(`  ${k.padEnd(44)} ${describeValue(v)}`);
    console.log(`\ntensors (${file.tensors.length}; ${[...types].map(([t, n]) => `${n} ${t}`).join(", ")}):`);
    for (const t of file.tensors) console.log(`  ${t.name.padEnd(36)} ${t.typeName.padEnd(6)} [${t.dims.join(", ")}]`);
  } finally {
    mapped.close();
  }
}

/**
 * `kiln chat`: a conversation on standard input, one user turn per line; replies stream to
 * standard output, everything else (prompt marker, stats) goes to standard error.
 */
async function chat(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" }, system: { type: "string" }, temperature: { type: "string" }, "max-tokens": { type: "string" },
      seed: { type: "string" }, "chat-template": { type: "string" }, threads: { type: "string" }, ctx: { type: "string" }, "kv-type": { type: "string" },
      "json-schema": { type: "string" },
    },
  });
  if (!o.model) throw new UsageError("chat needs --model");
  let jsonSchema: Record<string, unknown> | boolean | undefined;
  if (o["json-schema"]) {
    if (!existsSync(o["json-schema"])) throw new UsageError(`--json-schema: ${o["json-schema"]} does not exist`);
    try {
      jsonSchema = JSON.parse(readFileSync(o["json-schema"], "utf8"));
    } catch (e) {
      throw new UsageError(`--json-schema: ${o["json-schema"]} is not JSON: ${(e as Error).message}`);
    }
  }
  let chatTemplate = o["chat-template"];
  if (chatTemplate && !["chatml", "gemma", "llama3"].includes(chatTemplate)) {
    if (!existsSync(chatTemplate)) throw new UsageError(`--chat-template must be chatml, gemma, llama3 or a template file; ${chatTemplate} does not exist`);
    chatTemplate = readFileSync(chatTemplate, "utf8");
  }
  const model = await loadModel(o.model, { threads: num(o.threads, "threads", true), contextLength: num(o.ctx, "ctx", true), kvType: kvType(o["kv-type"]) });
  const session = model.createChatSession({ systemPrompt: o.system, chatTemplate });
  const tty = process.stdin.isTTY === true;
  const opts = { temperature: num(o.temperature, "temperature") ?? 0.7, maxTokens: num(o["max-tokens"], "max-tokens", true) ?? 512, seed: num(o.seed, "seed", true), jsonSchema };
  let last: Awaited<ReturnType<typeof session.prompt>> | undefined;
  try {
    if (tty) process.stderr.write(`[${o.model}: /reset, /stats, /exit]\n> `);
    for await (const raw of createInterface({ input: process.stdin, terminal: false })) {
      const line = raw.trim();
      if (line === "/exit" || line === "/quit") break;
      if (line === "/reset") {
        session.reset();
        process.stderr.write("[conversation reset]\n");
      } else if (line === "/stats") {
        const t = last?.timings;
        process.stderr.write(t ? `[last reply: ${t.promptTokens} prompt tokens evaluated (${t.cachedTokens} reused from the cache) at ${t.promptTokensPerSecond.toFixed(0)} tok/s, ${t.generatedTokens} generated at ${t.generatedTokensPerSecond.toFixed(1)} tok/s; ${session.history.length} messages, ${session.context.nPast}/${session.context.contextLength} context tokens]\n` : "[no reply yet]\n");
      } else if (line.length > 0) {
        const it = session.promptStream(line, opts);
        for (;;) {
          const r = await it.next();
          if (r.done) {
            last = r.value;
            break;
          }
          process.stdout.write(r.value.text);
        }
        process.stdout.write("\n");
      }
      if (tty) process.stderr.write("> ");
    }
  } finally {
    session.dispose();
    model.dispose();
  }
}

/** `kiln serve`: the OpenAI-compatible server (src/server/http.ts) until SIGINT/SIGTERM. */
async function serve(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" }, host: { type: "string" }, port: { type: "string" }, parallel: { type: "string" },
      queue: { type: "string" }, ctx: { type: "string" }, "kv-type": { type: "string" }, threads: { type: "string" }, "api-key": { type: "string" }, cors: { type: "string" },
    },
  });
  if (!o.model) throw new UsageError("serve needs --model");
  const port = num(o.port, "port", true) ?? 8080;
  if (port < 0 || port > 65535) throw new UsageError(`--port must be in [0, 65535], got ${port}`);
  const { startServer } = await import("./server/http");
  const server = await startServer({
    model: o.model, host: o.host, port, parallel: num(o.parallel, "parallel", true), queue: num(o.queue, "queue", true),
    contextLength: num(o.ctx, "ctx", true), kvType: kvType(o["kv-type"]), threads: num(o.threads, "threads", true), apiKey: o["api-key"], cors: o.cors,
  });
  console.error(`kiln serve: ${server.engine.modelId} on ${server.url}/v1 (${server.engine.stats().slots} slot(s) of ${server.engine.contextLength} tokens)`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await server.stop();
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd && (rest.includes("--help") || rest.includes("-h"))) {
      console.log(USAGE);
      return 0;
    }
    if (cmd === "generate") await generate(rest);
    else if (cmd === "chat") await chat(rest);
    else if (cmd === "--help" || cmd === "-h" || cmd === "help") console.log(USAGE);
    else if (cmd === "bench") throw new UsageError("bench is not in the published package: it runs in a kiln source checkout (`bun run kiln bench …` there), against llama.cpp, a dev dependency");
    else if (cmd === "tokenize") await tokenize(rest);
    else if (cmd === "inspect") inspect(rest);
    else if (cmd === "serve") await serve(rest);
    else throw new UsageError(cmd ? `unknown command "${cmd}"` : "no command given");
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      console.error(`kiln: ${(e as Error).message}\n${USAGE}`);
      return 2;
    }
    if (e instanceof GGUFError || e instanceof ModelError || e instanceof Error) {
      console.error(`kiln: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
