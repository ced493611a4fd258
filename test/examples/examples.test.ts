/**
 * Every example in examples/ runs, in its own process, with small settings (`--small`), and
 * prints what it promises: tokens/s, cache reuse, a parsed JSON object, the flash/naive table,
 * an SVG chart that parses, identical speculative output, OpenAI client replies, the memory
 * phases, a mitata summary — and examples/testing passes under `bun test`.
 *
 * `--threads 1`: the suite runs next to other work on small machines, where more kernel threads
 * than free cores is much slower; the examples' own defaults are kiln's (the physical cores).
 * Examples that need the models (scripts/setup.sh) are skipped without them.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const haveModels = ["gemma-3-270m-Q4_K_M.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"].every((f) => existsSync(join(root, "models", f)));
if (!haveModels) console.warn("examples.test.ts: the models are missing (run scripts/setup.sh); the examples that need them are skipped");

/** Per example: a small run takes a few seconds; generous for a loaded 2-core machine. */
const LIMIT_MS = 90_000;

/** Runs a command from the repository root; fails the test with its output if it exits non-zero or runs past the limit. */
async function runCommand(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, ...args], { cwd: root, stdout: "pipe", stderr: "pipe", env: { ...process.env, FORCE_COLOR: "0" } });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill();
  }, LIMIT_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const output = `${stdout}${stderr ? `\n[stderr]\n${stderr}` : ""}`;
  if (timedOut) throw new Error(`bun ${args.join(" ")} ran past ${LIMIT_MS} ms:\n${output}`);
  if (code !== 0) throw new Error(`bun ${args.join(" ")} exited with code ${code}:\n${output}`);
  return { stdout, stderr };
}

const example = async (name: string) => (await runCommand([`examples/${name}.ts`, "--small", "--threads", "1"])).stdout;

/** The first capture group of `re` in `text`, failing with the text when it does not match. */
function capture(text: string, re: RegExp): string {
  const m = re.exec(text);
  if (!m) throw new Error(`expected ${re} in:\n${text}`);
  return m[1]!;
}

/** Checks that `svg` is one well-formed <svg> element: every tag closed in order, nothing outside it. */
function expectWellFormedSvg(svg: string): void {
  const body = svg.trim();
  expect(body.startsWith("<svg ")).toBe(true);
  expect(body.endsWith("</svg>")).toBe(true);
  const open: string[] = [];
  for (const [, closing, name, selfClosing] of body.matchAll(/<(\/?)([A-Za-z][\w:-]*)(?:\s[^<>]*?)?(\/?)>/g)) {
    if (closing) expect(open.pop()).toBe(name!);
    else if (!selfClosing) open.push(name!);
  }
  expect(open).toEqual([]);
  expect(body.replace(/<[^<>]*>/g, "")).not.toMatch(/[<>]/); // no stray angle brackets in text
}

describe("examples (small settings)", () => {
  test.skipIf(!haveModels)("stream.ts streams text and prints tokens/s", async () => {
    const out = await example("stream");
    expect(out).toContain("The three most important inventions of the industrial revolution were");
    const tokens = Number(capture(out, /decode: (\d+) tokens in \d+ ms \([\d.]+ tok\/s\)/));
    expect(tokens).toBeGreaterThan(0);
    expect(tokens).toBeLessThanOrEqual(16);
    expect(Number(capture(out, /\(([\d.]+) tok\/s\), finish reason/))).toBeGreaterThan(0);
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("chat.ts: three turns, the second and third reuse the KV cache", async () => {
    const out = await example("chat");
    const cached = [...out.matchAll(/\[turn (\d): (\d+) prompt tokens cached, (\d+) evaluated/g)].map((m) => ({ turn: Number(m[1]), cached: Number(m[2]), evaluated: Number(m[3]) }));
    expect(cached.map((t) => t.turn)).toEqual([1, 2, 3]);
    expect(cached[0]!.cached).toBe(0);
    for (const t of cached.slice(1)) {
      expect(t.cached).toBeGreaterThan(t.evaluated); // most of the prompt came from the cache
      expect(t.evaluated).toBeGreaterThan(0);
    }
    expect(out).toContain("history: 7 messages (system, user, assistant, user, assistant, user, assistant)");
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("json.ts: the reply parses and matches the schema", async () => {
    const out = await example("json");
    const raw = capture(out, /raw reply \(\d+ tokens, finish reason stop\):\n([\s\S]*?)\n\nparsed:/);
    const value = JSON.parse(raw);
    expect(Object.keys(value)).toEqual(["city", "country", "population_millions", "is_capital", "landmarks"]);
    expect(typeof value.city).toBe("string");
    expect(Number.isInteger(value.population_millions)).toBe(true);
    expect(typeof value.is_capital).toBe("boolean");
    expect(Array.isArray(value.landmarks)).toBe(true);
    expect(value.landmarks.length).toBeGreaterThanOrEqual(1);
    expect(out).toContain(`${value.city} (${value.country}): ${value.population_millions} million people`);
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("long-context.ts: flash and naive side by side", async () => {
    const out = await example("long-context");
    expect(Number(capture(out, /document: (\d+) tokens/))).toBeGreaterThanOrEqual(600);
    expect(out).toMatch(/^\s+flash\s+naive$/m);
    for (const row of ["prefill", "prefill speed", "decode speed", "KV cache", "buffers", "RSS after load", "peak RSS"]) {
      expect(out).toMatch(new RegExp(`^${row}\\s+\\S.*\\S\\s+\\S.*$`, "m"));
    }
    // Same KV cache either way; naive attention's buffers add the score matrix.
    const [kvFlash, kvNaive] = capture(out, /^KV cache\s+(.*)$/m).trim().split(/\s{2,}/);
    expect(kvFlash).toBe(kvNaive!);
    const [bufFlash, bufNaive] = capture(out, /^buffers\s+(.*)$/m).trim().split(/\s{2,}/).map((s) => parseFloat(s));
    expect(bufNaive!).toBeGreaterThan(bufFlash!);
    expect(out).toMatch(/flash prefill speed-up: [\d.]+×; same summary text: (true|false)/);
  }, LIMIT_MS + 5_000);

  test("flash-attention.ts: checked kernels, a table, and an SVG chart that parses", async () => {
    const out = await example("flash-attention");
    expect(out).toMatch(/check: flash vs naive, 20 queries over 300 keys: max \|difference\| /);
    for (const keys of [512, 1024, 2048]) for (const queries of [128, 1]) expect(out).toMatch(new RegExp(`^\\s+${keys}\\s+${queries}\\s+[\\d.]+\\s+[\\d.]+\\s+[\\d.]+×`, "m"));
    const file = capture(out, /^wrote (.+\.svg)$/m);
    try {
      const svg = readFileSync(file, "utf8");
      expectWellFormedSvg(svg);
      for (const title of ["Prefill chunk (128 queries)", "Decode (1 query)", "Extra memory, 128 queries"]) expect(svg).toContain(title);
      expect(svg.match(/<polyline /g)?.length).toBe(6); // flash and naive in each of the three panels
    } finally {
      rmSync(dirname(file), { recursive: true, force: true });
    }
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("speculative.ts: speed-up, acceptance, identical output", async () => {
    const out = await example("speculative");
    expect(out).toContain("identical: true");
    expect(Number(capture(out, /speed-up: ([\d.]+)×/))).toBeGreaterThan(0);
    const [accepted, drafted] = capture(out, /acceptance: (\d+\/\d+) drafted tokens/).split("/").map(Number);
    expect(drafted!).toBeGreaterThan(0);
    expect(accepted!).toBeLessThanOrEqual(drafted!);
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("openai-client.ts: the openai client chats and streams against kiln's server", async () => {
    const out = await example("openai-client");
    expect(out).toContain("models: SmolLM2-135M-Instruct.Q4_1.gguf");
    expect(out).toMatch(/\[chat completion: finish_reason (stop|length), usage \d+ prompt \+ [1-9]\d* completion tokens\]/);
    expect(Number(capture(out, /\[streamed: (\d+) chunks with text/))).toBeGreaterThan(0);
  }, LIMIT_MS + 5_000);

  test.skipIf(!haveModels)("memory-profile.ts: every phase with RSS, peak and mapped bytes", async () => {
    const out = await example("memory-profile");
    for (const phase of ["start", "load", "context", "prefill", "decode", "dispose"]) expect(out).toMatch(new RegExp(`^${phase}\\s+[\\d.]+ MiB\\s+[+-][\\d.]+ MiB\\s+[\\d.]+ MiB\\s+([\\d.]+ MiB|n/a)`, "m"));
    expect(out).toMatch(/KV cache [\d.]+ MiB \+ buffers [\d.]+ MiB allocated/);
    expect(out).toMatch(/peak RSS [\d.]+ MiB/);
  }, LIMIT_MS + 5_000);

  test("kernel-bench.ts: a correctness check, then mitata's results", async () => {
    const out = await example("kernel-bench");
    expect(out).toMatch(/relative error f32 [\d.e+-]+, q8_0 [\d.e+-]+\ncheck passed/);
    for (const name of ["TypeScript loop (f32)", "kiln matmul (f32 weights)", "kiln matmul (q8_0 weights)"]) expect(out).toMatch(new RegExp(`${name.replace(/[()]/g, "\\$&")}\\s+[\\d.]+ [µnm]?s/iter`));
    expect(out).toMatch(/summary\n\s+TypeScript loop \(f32\)\n\s+[\d.]+x (slower|faster) than kiln matmul/);
  }, LIMIT_MS + 5_000);

  test("examples/testing passes under bun test", async () => {
    const { stderr } = await runCommand(["test", "examples/testing/"]); // bun test reports on stderr
    expect(Number(capture(stderr, /^\s*(\d+) pass$/m))).toBeGreaterThanOrEqual(3);
    expect(stderr).toMatch(/^\s*0 fail$/m);
  }, LIMIT_MS + 5_000);
});
