/**
 * What the docs tests read from markdown: the files (README.md and docs/*.md), their fenced code
 * blocks with the `<!-- not-run: REASON -->` marker on the line before a fence, their links, and
 * their headings' anchors as GitHub makes them.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..", "..");

/** README.md and every docs/*.md, as paths relative to the repository root. */
export function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => `docs/${f}`);
  return ["README.md", ...docs];
}

/** The languages the code-block test runs, by fence info string. */
export const RUNNABLE: Record<string, "ts" | "sh"> = { ts: "ts", typescript: "ts", sh: "sh", bash: "sh", shell: "sh" };

export interface CodeBlock {
  /** Repository-relative markdown file. */
  file: string;
  /** 1-based, counting only the runnable (ts/sh) blocks of the file, in order. */
  index: number;
  lang: "ts" | "sh";
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  /** The marker on the line before the fence: null when there is none; "" when it has no reason. */
  notRun: string | null;
  /** A line before the fence that looks like a marker but is not one (`<!-- not run -->`, …). */
  badMarker: string | null;
}

const MARKER = /^\s*<!--\s*not-run(?::(.*?))?\s*-->\s*$/;
const MARKER_LIKE = /<!--\s*not[\s_-]*run/i;

/** The fenced ts/sh blocks of one markdown text. */
export function codeBlocks(file: string, text: string): CodeBlock[] {
  const lines = text.split("\n");
  const out: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[2]!;
    const info = open[3]!.toLowerCase();
    let j = i + 1;
    while (j < lines.length && !new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`).test(lines[j]!)) j++;
    const lang = RUNNABLE[info];
    if (lang) {
      const prev = i > 0 ? lines[i - 1]! : "";
      const m = MARKER.exec(prev);
      out.push({
        file,
        index: out.length + 1,
        lang,
        line: i + 1,
        code: lines.slice(i + 1, j).join("\n") + "\n",
        notRun: m ? (m[1] ?? "").trim() : null,
        badMarker: !m && MARKER_LIKE.test(prev) ? prev.trim() : null,
      });
    }
    i = j;
  }
  return out;
}

export function readMarkdown(file: string): string {
  return readFileSync(join(ROOT, file), "utf8");
}

/** The text with fenced code blocks blanked (line numbers kept) and inline code spans removed. */
export function proseOnly(text: string): string {
  return withoutFences(text).replace(/(`+)[^`]*?\1/g, "");
}

export interface Link {
  file: string;
  line: number;
  target: string;
}

/** Markdown links and images `[text](target)`, and HTML `href="…"`/`src="…"`, outside code. */
export function links(file: string, text: string): Link[] {
  const out: Link[] = [];
  proseOnly(text)
    .split("\n")
    .forEach((l, i) => {
      for (const m of l.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ file, line: i + 1, target: m[1]! });
      for (const m of l.matchAll(/\b(?:href|src)="([^"]+)"/g)) out.push({ file, line: i + 1, target: m[1]! });
    });
  return out;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // links and images: their text
    .replace(/<[^>]+>/g, "") // inline HTML
    .replace(/[`*]/g, "");
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/** Every anchor a markdown file's headings define (duplicates numbered -1, -2, … as GitHub does). */
export function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of withoutFences(text).split("\n")) {
    const m = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  for (const m of text.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) out.add(m[1]!);
  return out;
}

/** Fenced blocks blanked (line numbers kept), inline code kept (headings may contain code spans). */
function withoutFences(text: string): string {
  const lines = text.split("\n");
  let fence: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const m = /^ {0,3}(`{3,}|~{3,})/.exec(lines[i]!);
    if (fence === null && m) {
      fence = m[1]!;
      lines[i] = "";
    } else if (fence !== null) {
      if (m && m[1]![0] === fence[0] && m[1]!.length >= fence.length && /^ {0,3}(`{3,}|~{3,})\s*$/.test(lines[i]!)) fence = null;
      lines[i] = "";
    }
  }
  return lines.join("\n");
}
