/**
 * Whole decode steps of one model in this process, with the read-bandwidth probe run before and
 * after (a host whose bandwidth changes between moments shows it here), for A/B of builds run as
 * separate processes, alternated by hand:
 *
 *   KILN_LIBRARY=A.so bun bench/decode-steps.ts MODEL.gguf; KILN_LIBRARY=B.so bun bench/decode-steps.ts MODEL.gguf; ...
 *
 * Loads as the suite's worker does (2 threads, flash attention, batch 512; env T=threads,
 * PACK=0 to read the layers in place), then three greedy generations of 64 tokens after a
 * 128-token prompt; prints the median step (ms/token) of each and the probe (GB/s, 2 threads).
 */
import { readFileSync } from "fs";
import { loadModel } from "../src/runtime/model";
import { readBandwidthGBs } from "./suite";

const path = process.argv[2];
if (!path) throw new Error("usage: bun bench/decode-steps.ts MODEL.gguf   (env KILN_LIBRARY, T, PACK=0)");
const threads = Number(process.env.T ?? 2);
const probe = () => readBandwidthGBs(threads, 256 << 20, 3);
const hugePagesMiB = () => Number(readFileSync("/proc/self/smaps_rollup", "utf8").match(/AnonHugePages:\s+(\d+)/)?.[1] ?? 0) >> 10;
const bwBefore = probe();
const t0 = performance.now();
const model = await loadModel(path, { threads, contextLength: 2304, batchSize: 512, prefillChunk: 512, maxLogitRows: 1, attention: "flash", device: "cpu", packLayers: process.env.PACK !== "0" });
const loadMs = performance.now() - t0;
try {
  const ids = model.tokenize("The history of the printing press begins in the fifteenth century. ".repeat(20)).slice(0, 128);
  const medians: string[] = [];
  for (let rep = 0; rep < 3; rep++) {
    const steps: number[] = [];
    let t = performance.now();
    let n = 0;
    for await (const _ of model.defaultContext.generate(ids, { maxTokens: 65, temperature: 0, speculative: false })) {
      const now = performance.now();
      if (n > 0) steps.push(now - t);
      t = now;
      n++;
    }
    steps.sort((a, b) => a - b);
    medians.push(steps[steps.length >> 1]!.toFixed(1));
  }
  const bwAfter = probe();
  console.log(`${path}: probe ${bwBefore.toFixed(0)} / ${bwAfter.toFixed(0)} GB/s before / after; load ${loadMs.toFixed(0)} ms, ${hugePagesMiB()} MiB huge pages; median ms/token of each run: ${medians.join(" ")}`);
} finally {
  model.dispose();
}
