/**
 * In-process A/B of whole decode steps with the layers' weights read in place and from packed
 * copies (LoadOptions.packLayers): the file loaded twice in one process, the two contexts
 * decoding in alternate rounds, so both see the same moments of a shared host's bandwidth.
 *
 *   bun bench/pack-layers-ab.ts MODEL.gguf [ROUNDS=10] [STEPS=16]
 *
 * Each round prefills the same short prompt, then times STEPS greedy decode steps; prints p10 and
 * p50 ms/token of each. Separate processes (KILN_PACK_LAYERS=0|1) moved ±15% run to run on a
 * shared 2-core VM, more than most differences worth measuring.
 */
import { argmax, loadModel } from "../src/index";

const [path, roundsArg, stepsArg] = process.argv.slice(2);
if (!path) throw new Error("usage: bun bench/pack-layers-ab.ts MODEL.gguf [ROUNDS] [STEPS]");
const rounds = Number(roundsArg ?? 10);
const steps = Number(stepsArg ?? 16);
const variants = await Promise.all(
  [false, true].map(async (packLayers) => ({
    name: packLayers ? "packed" : "in place",
    model: await loadModel(path, { packLayers, contextLength: 512, threads: 2 }),
  })),
);
for (const v of variants) console.log(`${v.name}: ${v.model.packedLayerWeights} layer weights packed`);
const contexts = variants.map((v) => v.model.createContext());
const times: number[][] = variants.map(() => []);
const prompt = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203].map((id) => id % variants[0]!.model.hp.nVocab);
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < variants.length; i++) {
    const ctx = contexts[i]!;
    ctx.reset();
    let logits = ctx.eval(prompt);
    let token = argmax(logits.f32);
    for (let s = 0; s < steps; s++) {
      const t = performance.now();
      logits = ctx.eval([token]);
      token = argmax(logits.f32);
      times[i]!.push(performance.now() - t);
    }
  }
}
const quantile = (a: number[], f: number) => [...a].sort((x, y) => x - y)[Math.floor(f * (a.length - 1))]!;
const name = path.split("/").pop();
for (let i = 0; i < variants.length; i++) {
  const p50 = quantile(times[i]!, 0.5);
  console.log(`${name} ${variants[i]!.name}: p10 ${quantile(times[i]!, 0.1).toFixed(2)} p50 ${p50.toFixed(2)} ms/token (${(1000 / p50).toFixed(1)} tok/s)`);
}
for (const c of contexts) c.dispose();
for (const v of variants) v.model.dispose();
