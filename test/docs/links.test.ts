/**
 * Every relative link of README.md and docs/*.md resolves: the file exists in the checkout, and
 * an #anchor names a heading of the markdown file it points into (GitHub's anchors), or a line
 * (#L12, #L12-L20) the file has.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { ROOT, anchors, links, markdownFiles, readMarkdown } from "./markdown";

const files = markdownFiles();

function check(file: string, target: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return null; // http:, https:, mailto:
  const hash = target.indexOf("#");
  const pathPart = decodeURIComponent(hash >= 0 ? target.slice(0, hash) : target);
  const anchor = hash >= 0 ? decodeURIComponent(target.slice(hash + 1)) : null;
  const path = pathPart === "" ? join(ROOT, file) : join(ROOT, dirname(file), pathPart);
  if (relative(ROOT, path).startsWith("..")) return `points outside the repository`;
  if (!existsSync(path)) return `${relative(ROOT, path)} does not exist`;
  if (anchor === null || anchor === "") return null;
  if (statSync(path).isDirectory()) return `#${anchor} on a directory`;
  const lineRef = /^L(\d+)(?:-L(\d+))?$/.exec(anchor);
  if (lineRef) {
    const n = readFileSync(path, "utf8").split("\n").length;
    const last = Number(lineRef[2] ?? lineRef[1]);
    return last <= n ? null : `#${anchor}: ${relative(ROOT, path)} has ${n} lines`;
  }
  if (!path.endsWith(".md")) return `#${anchor} into a file that is not markdown`;
  const known = anchors(readFileSync(path, "utf8"));
  return known.has(anchor) ? null : `#${anchor} is no heading of ${relative(ROOT, path)} (it has: ${[...known].join(", ")})`;
}

describe("links between the docs resolve", () => {
  for (const file of files) {
    test(file, () => {
      const found = links(file, readMarkdown(file));
      const broken = found.map((l) => ({ l, why: check(file, l.target) })).filter((x) => x.why !== null);
      expect(broken.map(({ l, why }) => `${file}:${l.line} (${l.target}): ${why}`)).toEqual([]);
    });
  }

  test("the check can fail: a missing file, a missing heading, a line past the end", () => {
    expect(check("README.md", "docs/no-such-guide.md")).toContain("does not exist");
    expect(check("README.md", "docs/api.md#no-such-heading")).toContain("no heading");
    expect(check("docs/api.md", "#generate")).toBeNull();
    expect(check("docs/api.md", "../README.md#quick-start")).toBeNull();
    expect(check("README.md", "package.json#L100000")).toContain("lines");
    expect(check("README.md", "https://example.com/x")).toBeNull();
  });

  test("the docs link to each other (README links every guide)", () => {
    const readme = links("README.md", readMarkdown("README.md")).map((l) => l.target.split("#")[0]);
    const guides = files.filter((f) => f.startsWith("docs/"));
    expect(guides.filter((g) => !readme.includes(g))).toEqual([]);
  });
});
