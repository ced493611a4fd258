/**
 * Per-op time of prompt evaluation (prefill): loads a model, evaluates a `N`-token prompt in the
 * context's prefill chunks with the op profiler on, and prints the ms per op for the whole prompt.
 *   bun bench/prefill-profile.ts MODEL [N=512] [threads=2]
 */
import { loadModel } from "../src/index";

const [path, nArg, tArg] = process.argv.slice(2);
if (!path) throw new Error("usage: bun bench/prefill-profile.ts MODEL [N] [threads]");
const n = Number(nArg ?? 512);
const threads = Number(tArg ?? 2);
const model = await loadModel(path, { threads });
const ctx = model.createContext({ contextLength: Math.max(1024, n + 16), ...(process.env.CHUNK ? { prefillChunk: Number(process.env.CHUNK) } : {}) });
const ids = Array.from({ length: n }, (_, i) => 100 + ((i * 7919) % 5000));
ctx.eval(ids.slice(0, 64)); // warm
const runs: number[] = [];
for (let rep = 0; rep < 3; rep++) {
  ctx.reset();
  ctx.profiler.reset();
  ctx.profiling = true;
  const t0 = performance.now();
  for (let i = 0; i < n; i += ctx.prefillChunk) ctx.eval(ids.slice(i, Math.min(n, i + ctx.prefillChunk)));
  const wall = performance.now() - t0;
  ctx.profiling = false;
  runs.push(wall);
  if (rep < 2) continue;
  const ops = ctx.profiler.snapshot();
  const inOps = ops.reduce((a, o) => a + o.ms, 0);
  console.log(`prefill ${n} tokens in chunks of ${ctx.prefillChunk}: ${wall.toFixed(1)} ms (${((n / wall) * 1000).toFixed(0)} tok/s); runs ${runs.map((r) => r.toFixed(0)).join(", ")} ms`);
  for (const o of [...ops].sort((a, b) => b.ms - a.ms)) console.log(`  ${o.op.padEnd(30)}${o.ms.toFixed(1).padStart(9)} ms ${((o.ms / wall) * 100).toFixed(1).padStart(6)}% ${String(o.calls).padStart(6)}`);
  console.log(`  ${"other".padEnd(30)}${(wall - inOps).toFixed(1).padStart(9)} ms ${(((wall - inOps) / wall) * 100).toFixed(1).padStart(6)}%`);
}
ctx.dispose();
model.dispose();
