/**
 * A long document summarised by Gemma 3 270M in an 8K context, once with flash attention (fused,
 * the default) and once with naive attention (scores materialized), side by side: prefill time
 * and speed, decode speed, KV cache and buffer bytes, and peak RSS.
 *
 *   bun examples/long-context.ts [--small] [--threads N]
 *
 * The document is a harbour log generated here from a fixed seed (the same text on every run),
 * grown until it is at least 4,096 tokens long. Gemma 3 270M is a base model, so the summary is
 * the continuation of "In summary, over these days the harbour" after the log (64 tokens,
 * greedy). Each attention path runs in its own process (this file with `--attention
 * flash|naive`), so each peak RSS is that path's alone.
 *
 * --small: a ~600-token document in a 1,024-token context, 8 generated tokens (what
 * test/examples runs).
 */
import { loadModel } from "../src/index";
import { GEMMA, mib, peakRssBytes, requireModel, rssBytes, small, threads } from "./common";

const documentTokens = small ? 600 : 4096;
const contextLength = small ? 1024 : 8192;
const maxTokens = small ? 8 : 64;
const SUMMARY_START = "In summary, over these days the harbour";

interface PathResult {
  attention: "flash" | "naive";
  documentTokens: number;
  promptTokens: number;
  prefillMs: number;
  prefillTokensPerSecond: number;
  generatedTokens: number;
  decodeTokensPerSecond: number;
  kvBytes: number;
  bufferBytes: number;
  rssAfterLoadBytes: number;
  peakRssBytes: number;
  summary: string;
}

/**
 * A harbour log, deterministic (a fixed seed: the same text on every run), one paragraph a day
 * until `countTokens` says the paragraphs hold at least `minTokens` tokens. Each paragraph is
 * counted on its own, so building the document tokenizes it about once (little garbage to
 * inflate the peak RSS measured later).
 */
function harbourLog(minTokens: number, countTokens: (text: string) => number): string {
  const ships = ["Aurora", "Beatrice", "Cormorant", "Dauntless", "Evening Star", "Fair Wind", "Gannet", "Halcyon"];
  const ports = ["Lisbon", "Bristol", "Bergen", "Genoa", "Antwerp", "Cadiz", "Dublin", "Hamburg"];
  const cargo = ["barrels of olive oil", "bales of wool", "crates of oranges", "tons of coal", "casks of wine", "sacks of grain", "rolls of canvas", "chests of tea"];
  const weather = ["a fresh westerly breeze", "heavy rain from the south", "thick morning fog", "calm seas and clear skies", "a gale that kept the pilots ashore", "a light northerly wind"];
  const events = [
    "The harbour master inspected the papers and found them in order.",
    "Two crewmen were sent to the infirmary with fever.",
    "The cargo was unloaded at the east quay before nightfall.",
    "A dispute over mooring fees was settled by the port clerk.",
    "The ship took on fresh water and salted pork for the return voyage.",
    "Customs officers seized a small quantity of undeclared tobacco.",
  ];
  let seed = 20240601;
  const pick = <T,>(xs: T[]): T => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return xs[seed % xs.length]!;
  };
  const paragraphs = ["The log of the harbour of Port Wren, kept by the harbour master.\n\n"];
  let tokens = countTokens(paragraphs[0]!);
  for (let day = 1; tokens < minTokens; day++) {
    const paragraph = `Day ${day}. Weather: ${pick(weather)}. The ${pick(ships)} arrived from ${pick(ports)} carrying ${20 + ((day * 37) % 180)} ${pick(cargo)}. ${pick(events)} `
      + `The ${pick(ships)} departed for ${pick(ports)} with ${10 + ((day * 53) % 90)} ${pick(cargo)}. ${pick(events)}\n\n`;
    paragraphs.push(paragraph);
    tokens += countTokens(paragraph);
  }
  return paragraphs.join("");
}

/** One attention path, in this process: load, prefill the document, generate the summary, measure. */
async function runPath(attention: "flash" | "naive"): Promise<PathResult> {
  const model = await loadModel(requireModel(GEMMA), { threads });
  const rssAfterLoadBytes = rssBytes();
  const ctx = model.createContext({ contextLength, attention });
  const document = harbourLog(documentTokens, (text) => model.tokenize(text).length);
  const tokensInDocument = model.tokenize(document).length;
  // Gemma 3 270M is a base model: it continues text (asked for a summary through a chat
  // template, it copies the log). So the summary is a continuation the prompt starts.
  const prompt = `${document}${SUMMARY_START}`;
  Bun.gc(true);
  const r = await ctx.complete(prompt, { maxTokens, temperature: 0, speculative: false });
  const { kvBytes, bufferBytes } = ctx.memory;
  ctx.dispose();
  model.dispose();
  return {
    attention,
    documentTokens: tokensInDocument,
    promptTokens: r.timings.promptTokens,
    prefillMs: r.timings.promptMs,
    prefillTokensPerSecond: r.timings.promptTokensPerSecond,
    generatedTokens: r.timings.generatedTokens,
    decodeTokensPerSecond: r.timings.generatedTokensPerSecond,
    kvBytes,
    bufferBytes,
    rssAfterLoadBytes,
    peakRssBytes: peakRssBytes(),
    summary: r.text.trimEnd(),
  };
}

/** Runs this file for one attention path in a child process; its last stdout line is the result as JSON. */
async function inChild(attention: "flash" | "naive"): Promise<PathResult> {
  const args = [process.execPath, import.meta.path, "--attention", attention, ...(small ? ["--small"] : []), ...(threads ? ["--threads", String(threads)] : [])];
  const child = Bun.spawn(args, { stdout: "pipe", stderr: "inherit" });
  const [out, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  if (code !== 0) throw new Error(`${attention} run exited with code ${code}:\n${out}`);
  return JSON.parse(out.trim().split("\n").at(-1)!) as PathResult;
}

const attentionArg = process.argv.indexOf("--attention");
if (attentionArg >= 0) {
  const attention = process.argv[attentionArg + 1];
  if (attention !== "flash" && attention !== "naive") throw new Error(`--attention takes flash or naive, got ${attention}`);
  console.log(JSON.stringify(await runPath(attention)));
} else {
  console.log(`Gemma 3 270M, context ${contextLength} tokens, a document of ≥ ${documentTokens} tokens, ${maxTokens} tokens of summary (greedy)\n`);
  const flash = await inChild("flash");
  const naive = await inChild("naive");
  console.log(`document: ${flash.documentTokens} tokens; prompt: ${flash.promptTokens} tokens\n`);
  console.log(`summary (flash): ${SUMMARY_START}${flash.summary}\n`);
  const rows: [string, (r: PathResult) => string][] = [
    ["prefill", (r) => `${(r.prefillMs / 1000).toFixed(2)} s`],
    ["prefill speed", (r) => `${r.prefillTokensPerSecond.toFixed(0)} tok/s`],
    ["decode speed", (r) => `${r.decodeTokensPerSecond.toFixed(1)} tok/s`],
    ["KV cache", (r) => mib(r.kvBytes)],
    ["buffers", (r) => mib(r.bufferBytes)],
    ["RSS after load", (r) => mib(r.rssAfterLoadBytes)],
    ["peak RSS", (r) => mib(r.peakRssBytes)],
  ];
  console.log(`${"".padEnd(16)}${"flash".padStart(14)}${"naive".padStart(14)}`);
  for (const [name, cell] of rows) console.log(`${name.padEnd(16)}${cell(flash).padStart(14)}${cell(naive).padStart(14)}`);
  const same = flash.summary === naive.summary;
  console.log(`\nflash prefill speed-up: ${(naive.prefillMs / flash.prefillMs).toFixed(2)}×; same summary text: ${same}${same ? "" : " (the two paths sum in another order, so a greedy near-tie can go another way)"}`);
}
