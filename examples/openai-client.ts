/**
 * The official `openai` npm client against kiln's OpenAI-compatible server: list the models, one
 * chat completion, then the same kind of request streamed token by token.
 *
 *   bun examples/openai-client.ts [--small] [--threads N]
 *   KILN_URL=http://127.0.0.1:8080 bun examples/openai-client.ts     # against a running `kiln serve`
 *
 * Without KILN_URL the server is started in this process on a free port, with the instruct model
 * (SmolLM2-135M-Instruct) — the same server as
 * `bun run kiln serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf` (docs/server.md) — and
 * stopped at the end. --small: replies of at most 16 tokens instead of 96 (what test/examples runs).
 */
import OpenAI from "openai";
import { startServer, type RunningServer } from "../src/index";
import { SMOLLM2, requireModel, small, threads } from "./common";

const maxTokens = small ? 16 : 96;

let server: RunningServer | undefined;
let baseURL: string;
if (process.env.KILN_URL) {
  baseURL = `${process.env.KILN_URL.replace(/\/+$/, "")}/v1`;
} else {
  // port 0: a free port. The model runs in a worker thread, as under `kiln serve`, so this
  // thread (the HTTP side) never waits on a kernel.
  server = await startServer({ model: requireModel(SMOLLM2), port: 0, contextLength: 1024, threads });
  baseURL = `${server.url}/v1`;
  console.log(`kiln serve started in-process at ${server.url}`);
}

try {
  // kiln serve needs no key unless started with --api-key; the client insists on one.
  const client = new OpenAI({ baseURL, apiKey: process.env.KILN_API_KEY ?? "none", maxRetries: 0, timeout: 60_000 });
  const models = await client.models.list();
  const model = models.data[0]!.id;
  console.log(`models: ${models.data.map((m) => m.id).join(", ")}\n`);

  const question = "What is the capital of France?";
  console.log(`> ${question}`);
  const completion = await client.chat.completions.create({
    model,
    messages: [
      { role: "system", content: "You are a helpful assistant. Answer briefly." },
      { role: "user", content: question },
    ],
    max_tokens: maxTokens,
    temperature: 0,
  });
  const choice = completion.choices[0]!;
  console.log(choice.message.content);
  console.log(`[chat completion: finish_reason ${choice.finish_reason}, usage ${completion.usage?.prompt_tokens} prompt + ${completion.usage?.completion_tokens} completion tokens]\n`);

  const streamed = "Name three colours of the rainbow.";
  console.log(`> ${streamed}`);
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: streamed }],
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let chunks = 0;
  let finishReason: string | null = null;
  let completionTokens: number | undefined;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta.content;
    if (delta) {
      process.stdout.write(delta);
      chunks++;
    }
    finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
  }
  console.log(`\n[streamed: ${chunks} chunks with text, ${completionTokens} completion tokens, finish_reason ${finishReason}]`);
} finally {
  await server?.stop();
}
