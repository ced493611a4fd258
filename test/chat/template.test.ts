/**
 * Chat templates: byte parity with Python jinja2 configured as transformers configures it
 * (test/chat/render_reference.py) on real models' templates (test/chat/templates/), the limits
 * on untrusted templates, the sandbox, and the built-in templates.
 *
 * The parity half needs `python3` with jinja2 3.1.6: scripts/setup.sh installs it into .tools/py,
 * and we run the reference with PYTHONPATH=.tools/py (a system jinja2 works too).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BUILTIN_CHAT_TEMPLATES, chatTemplateOf, renderChatTemplate, type ChatMessage } from "../../src/chat/template";
import { KilnError } from "../../src/errors";
import { GGUFMetadata } from "../../src/gguf/reader";
import { GGUFValueType } from "../../src/gguf/types";

const ROOT = join(import.meta.dir, "../..");
const CORPUS = join(import.meta.dir, "templates");
const TEMPLATES = readdirSync(CORPUS)
  .filter((f) => f.endsWith(".jinja"))
  .sort()
  .map((f) => ({ name: f, source: readFileSync(join(CORPUS, f), "utf8") }));

const CONVERSATIONS: Record<string, ChatMessage[]> = {
  "system+user": [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is the capital of France?" },
  ],
  "user only": [{ role: "user", content: "Hello!" }],
  "multi-turn": [
    { role: "user", content: "Hi, who are you?" },
    { role: "assistant", content: "I am an assistant. How can I help?" },
    { role: "user", content: "Tell me a joke." },
  ],
  "system+multi-turn": [
    { role: "system", content: "Answer briefly." },
    { role: "user", content: "2+2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3+3?" },
  ],
  unicode: [
    { role: "system", content: "Réponds en français — «poliment». 日本語も OK. \"quotes\" and \\backslash\\" },
    { role: "user", content: "  Ça va ? 🙂\n\tNew line, tab, ünïcödé, 中文, emoji 👩‍💻  " },
    { role: "assistant", content: "Très bien ! 😀 </s> <|im_end|>" },
    { role: "user", content: "Merci 🙏" },
  ],
  "assistant last": [
    { role: "user", content: "Say yes." },
    { role: "assistant", content: "Yes." },
  ],
};

type Case = { template: string; messages: ChatMessage[]; add_generation_prompt: boolean; bos_token: string; eos_token: string };
type Answer = { text: string } | { error: string };

function reference(cases: Case[]): Answer[] | undefined {
  const r = Bun.spawnSync(["python3", join(import.meta.dir, "render_reference.py")], {
    stdin: new TextEncoder().encode(JSON.stringify(cases)),
    env: { ...process.env, PYTHONPATH: [join(ROOT, ".tools/py"), process.env.PYTHONPATH].filter(Boolean).join(":") },
  });
  if (r.exitCode !== 0) {
    console.warn(`chat template parity skipped: the Python reference failed (${r.stderr.toString().trim().split("\n").at(-1)}); run scripts/setup.sh`);
    return undefined;
  }
  return JSON.parse(r.stdout.toString()) as Answer[];
}

function kiln(c: Case, name: string): Answer {
  try {
    const text = renderChatTemplate(c.template, c.messages, {
      addGenerationPrompt: c.add_generation_prompt,
      bosToken: c.bos_token,
      eosToken: c.eos_token,
      name,
    });
    return { text };
  } catch (err) {
    if (!(err instanceof KilnError) || err.code !== "CHAT_TEMPLATE") throw err;
    expect(err.message).toContain(name);
    return { error: err.message };
  }
}

const cases: { label: string; name: string; c: Case }[] = [];
for (const t of TEMPLATES) {
  for (const [conv, messages] of Object.entries(CONVERSATIONS)) {
    for (const gen of [true, false]) {
      cases.push({
        label: `${t.name} × ${conv}${gen ? " + generation prompt" : ""}`,
        name: t.name,
        c: { template: t.source, messages, add_generation_prompt: gen, bos_token: "<BOS>", eos_token: "<EOS>" },
      });
    }
  }
}
// Small templates aimed at the environment itself: lstrip/trim_blocks, the dropped trailing
// newline, loopcontrols, tojson without ASCII escaping, the sandbox's undefined attributes.
const ENVIRONMENT_PROBES: Record<string, string> = {
  "lstrip_blocks": "A\n    {% if true %}\n    B\n    {% endif %}\nC\n",
  "loopcontrols": "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{% if loop.index0 == 3 %}{% break %}{% endif %}[{{ m.role }}]{% endfor %}",
  "tojson": "{{ messages | tojson }}|{{ {'k': 'é', 'a': [1, 2.5, none, true]} | tojson }}",
  "sandbox": "[{{ ''.__class__ }}][{{ messages.__class__ }}][{{ messages.constructor }}]",
};
for (const [probe, template] of Object.entries(ENVIRONMENT_PROBES)) {
  cases.push({
    label: `environment probe: ${probe}`,
    name: probe,
    c: { template, messages: CONVERSATIONS.unicode!, add_generation_prompt: true, bos_token: "<BOS>", eos_token: "<EOS>" },
  });
}
const answers = reference(cases.map((x) => x.c));

describe.skipIf(!answers)("parity with transformers' jinja2 on real models' templates", () => {
  test("the corpus is there and mostly renders", () => {
    expect(TEMPLATES.length).toBeGreaterThanOrEqual(12);
    expect(answers!.filter((a) => "text" in a).length).toBeGreaterThan(cases.length / 2);
  });
  cases.forEach(({ label, name, c }, i) => {
    test(label, () => {
      const want = answers![i]!;
      const got = kiln(c, name);
      if ("error" in want) expect({ raised: "error" in got, by: want.error }).toEqual({ raised: true, by: want.error });
      else expect(got).toEqual(want);
    });
  });
});

describe("limits on untrusted templates", () => {
  const expectFails = (template: string, cause: RegExp, limits?: Parameters<typeof renderChatTemplate>[2]["limits"]) => {
    let err: unknown;
    try {
      renderChatTemplate(template, [{ role: "user", content: "hi" }], { name: "evil.gguf", limits });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe("CHAT_TEMPLATE");
    expect((err as KilnError).message).toContain('"evil.gguf"');
    expect((err as KilnError).message).toMatch(cause);
  };

  test("a huge range is refused before it is built", () => {
    expectFails("{% for i in range(1000000000) %}x{% endfor %}", /range\(\) of 1000000000 items/);
  });
  test("nested loops run into the step cap", () => {
    expectFails("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}", /evaluation steps|ms/);
  });
  test("nested loops run into the time cap", () => {
    const t0 = performance.now();
    expectFails("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}", /took over 200 ms/, { timeoutMs: 200, maxSteps: 1e12 });
    expect(performance.now() - t0).toBeLessThan(1500);
  });
  test("loops with empty bodies are bounded too: range() items count as steps, the clock is read every step", () => {
    // Before: two nested range(1000000) loops with nothing inside took 23.7 s under a 200 ms limit
    // (an empty body evaluates nothing, so neither the step count nor the clock moved).
    const t0 = performance.now();
    expectFails("{% for a in range(1000000) %}{% for b in range(1000000) %}{% endfor %}{% endfor %}", /took over 200 ms/, { timeoutMs: 200, maxSteps: 1e12 });
    expect(performance.now() - t0).toBeLessThan(3000);
    expectFails("{% for a in range(1000000) %}{% for b in range(1000000) %}{% endfor %}{% endfor %}", /evaluation steps|took over 1000 ms/);
  });
  test("output that doubles itself hits the size cap", () => {
    expectFails("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", /output over the limit of 1048576 chars/);
  });
  test("many small pieces of output hit the size cap too", () => {
    expectFails("{% for i in range(1000000) %}0123456789{% endfor %}", /output over the limit/);
  });
  test("runaway macro recursion", () => {
    expectFails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", /recursion|nesting/);
  });
  test("parse errors and raise_exception name the template and the cause", () => {
    expectFails("{% for %}", /does not parse/);
    expectFails("{{ raise_exception('no system role, sorry') }}", /raised: no system role, sorry/);
  });
  test("only plain data goes in", () => {
    expect(() => renderChatTemplate("{{ f() }}", [], { name: "t", extra: { f: () => process.exit(1) } })).toThrow(/extra\.f is not plain data/);
    expect(() => renderChatTemplate("{{ d }}", [], { name: "t", extra: { d: new Date() } })).toThrow(KilnError);
    expect(() => renderChatTemplate("x", [{ role: "user", content: 3 } as unknown as ChatMessage], { name: "t" })).toThrow(/messages\[0\]/);
  });
  test("host objects are out of reach", () => {
    const probes = [
      "{{ messages.constructor }}",
      "{{ messages[0].constructor }}",
      "{{ messages.__proto__ }}",
      "{{ ''.__class__ }}",
      "{{ ''.constructor }}",
      "{{ ''.__class__.__mro__ }}",
      "{{ raise_exception.constructor }}",
      "{{ range.constructor }}",
      "{{ cycler }}{{ joiner }}{{ lipsum }}{{ self }}{{ process }}{{ globalThis }}{{ Bun }}{{ require }}",
    ];
    for (const p of probes) {
      let out: string | undefined;
      try {
        out = renderChatTemplate(p, [{ role: "user", content: "hi" }], { name: "probe" });
      } catch (e) {
        expect(e).toBeInstanceOf(KilnError);
      }
      if (out !== undefined) expect(out).not.toMatch(/function|native code|\[object|class/i);
    }
    // Calling what the constructor would be, if it leaked, must not run host code.
    expect(() => renderChatTemplate("{{ messages.constructor.constructor('return process')() }}", [], { name: "probe" })).toThrow(KilnError);
  });
});

describe("built-in templates", () => {
  const conv: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello!" },
    { role: "user", content: "Bye" },
  ];
  test("chatml", () => {
    expect(renderChatTemplate(BUILTIN_CHAT_TEMPLATES.chatml, conv)).toBe(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    );
  });
  test("gemma folds the system prompt into the first user turn", () => {
    expect(renderChatTemplate(BUILTIN_CHAT_TEMPLATES.gemma, conv, { bosToken: "<bos>" })).toBe(
      "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n" +
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    );
    expect(() => renderChatTemplate(BUILTIN_CHAT_TEMPLATES.gemma, [{ role: "assistant", content: "x" }], { name: "gemma" })).toThrow(/must alternate/);
  });
  test("llama3", () => {
    expect(renderChatTemplate(BUILTIN_CHAT_TEMPLATES.llama3, conv, { bosToken: "<|begin_of_text|>", addGenerationPrompt: false })).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>",
    );
  });
  test("built-ins match the jinja2 reference too", () => {
    const cs = Object.values(BUILTIN_CHAT_TEMPLATES).map((template) => ({ template, messages: conv, add_generation_prompt: true, bos_token: "<BOS>", eos_token: "<EOS>" }));
    const ref = reference(cs);
    if (!ref) return;
    cs.forEach((c, i) => expect(kiln(c, "builtin")).toEqual(ref[i]!));
  });
});

test("chatTemplateOf reads tokenizer.chat_template", () => {
  const meta = new GGUFMetadata("m.gguf");
  expect(chatTemplateOf(meta)).toBeUndefined();
  meta.set("tokenizer.chat_template", { type: GGUFValueType.STRING, value: "{{ x }}", offset: 0 } as never);
  expect(chatTemplateOf(meta)).toBe("{{ x }}");
});
