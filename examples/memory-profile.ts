/**
 * Where the memory goes over one generation, phase by phase (load, context, prefill, decode,
 * dispose), on Gemma 3 270M: the process's resident set (RSS) and its peak, how much of the
 * mapped model file is resident, and what the context allocates — the KV cache and the buffers
 * (activations, matmul scratch, logits) — as kiln reports them before and after allocating.
 *
 *   bun examples/memory-profile.ts [--small] [--threads N]
 *
 * The weights are mapped read-only, not copied: their pages become resident as the kernels read
 * them (the first forward call), and the OS can drop them again under pressure. The output head
 * is packed into a copy at load where the CPU build has a packed layout (its file pages are
 * dropped as it is packed). "mapped resident" reads /proc/self/smaps (Linux; "n/a" elsewhere).
 *
 * --small: a 2,048-token context, a ~64-token prompt and 8 generated tokens instead of 8,192,
 * ~1,000 and 128 (what test/examples runs).
 */
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { loadModel } from "../src/index";
import { GEMMA, mib, peakRssBytes, requireModel, rssBytes, small, threads } from "./common";

const contextLength = small ? 2048 : 8192;
const promptSentences = small ? 4 : 60;
const maxTokens = small ? 8 : 128;
const path = requireModel(GEMMA);

/** Resident bytes of this process's mappings of `file` (Linux /proc/self/smaps), or null where unavailable. */
function mappedResidentBytes(file: string): number | null {
  if (!existsSync("/proc/self/smaps")) return null;
  const target = realpathSync(file);
  let inTarget = false;
  let kb = 0;
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    // A mapping's header: "start-end perms offset dev inode [path]"; its fields follow, "Key: value kB".
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) inTarget = header[1] === target;
    else if (inTarget && line.startsWith("Rss:")) kb += Number(line.split(/\s+/)[1]);
  }
  return kb * 1024;
}

const phases: { phase: string; rss: number; peak: number; mapped: number | null; note: string }[] = [];
function record(phase: string, note = ""): void {
  const row = { phase, rss: rssBytes(), peak: peakRssBytes(), mapped: mappedResidentBytes(path), note };
  phases.push(row);
  const delta = phases.length > 1 ? row.rss - phases.at(-2)!.rss : 0;
  const sign = delta >= 0 ? "+" : "-";
  console.log(`${phase.padEnd(9)}${mib(row.rss).padStart(12)}${`${sign}${mib(Math.abs(delta))}`.padStart(13)}${mib(row.peak).padStart(12)}${(row.mapped === null ? "n/a" : mib(row.mapped)).padStart(17)}   ${note}`);
}

const fileBytes = statSync(path).size;
console.log(`Gemma 3 270M Q4_K_M: ${mib(fileBytes)} file, mapped read-only; context of ${contextLength} tokens\n`);
console.log(`${"phase".padEnd(9)}${"RSS".padStart(12)}${"Δ RSS".padStart(13)}${"peak RSS".padStart(12)}${"mapped resident".padStart(17)}   what happened`);
record("start", "bun and kiln's modules");

const model = await loadModel(path, { threads });
const head = model.file.tensorsByName.get("output.weight") ?? model.file.tensorsByName.get("token_embd.weight")!;
const headNote = model.outputHeadPacked ? `output head packed into a ${mib(head.nbytes)} copy` : "output head read in place";
record("load", `file mapped, tokenizer built, ${headNote}, in ${model.loadMs.toFixed(0)} ms`);

const planned = model.contextMemory({ contextLength });
const ctx = model.createContext({ contextLength });
const { kvBytes, bufferBytes } = ctx.memory;
if (kvBytes !== planned.kvBytes || bufferBytes !== planned.bufferBytes) throw new Error("the context allocated other sizes than model.contextMemory planned");
record("context", `KV cache ${mib(kvBytes)} + buffers ${mib(bufferBytes)} allocated (pages become resident when written)`);

const sentence = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the meadow. ";
const prompt = `${sentence.repeat(promptSentences)}\nWhat did the fox do?`;
const pieces = ctx.generate(prompt, { maxTokens, temperature: 0, speculative: false });
let next = await pieces.next();
const promptTokens = ctx.nPast;
record("prefill", `${promptTokens} prompt tokens evaluated: weights read, KV rows written (${mib((kvBytes * promptTokens) / contextLength)} of the cache)`);
while (!next.done) next = await pieces.next();
const result = next.value;
record("decode", `${result.timings.generatedTokens} tokens generated at ${result.timings.generatedTokensPerSecond.toFixed(1)} tok/s; ${ctx.nPast} positions of the KV cache in use`);

ctx.dispose();
model.dispose();
Bun.gc(true);
record("dispose", "context freed, file unmapped");

const peak = phases.at(-1)!.peak;
console.log(`\npeak RSS ${mib(peak)}: bun itself ${mib(phases[0]!.rss)}, then the tokenizer, the packed head, the weights' pages as the kernels read them, and the KV cache and buffers as they were written`);
