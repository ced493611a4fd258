/**
 * Every crafted file from crafted.ts (one per hardening-checklist case) is rejected with the
 * expected code, by a GGUFError whose field, offset and message name the bad field.
 */
import { describe, expect, test } from "bun:test";
import { GGUFError, UnsupportedQuantTypeError } from "../../src/gguf/errors";
import { parseGGUF, validateSplit } from "../../src/gguf/reader";
import { baseFile, craftedCases, craftedSplitCases } from "./crafted";

function parseError(bytes: Uint8Array, opts = {}): GGUFError {
  try {
    parseGGUF(bytes, { fileName: "crafted.gguf", ...opts });
  } catch (e) {
    if (e instanceof GGUFError) return e;
    throw new Error(`expected a GGUFError, got ${e}`);
  }
  throw new Error("expected the file to be rejected, but it parsed");
}

describe("crafted malformed files", () => {
  test("the base file is valid", () => {
    const f = parseGGUF(baseFile());
    expect(f.tensors.map((t) => t.name)).toEqual(["tok.f32", "q8", "four"]);
  });

  const cases = craftedCases();
  test("covers every checklist section", () => {
    const ids = new Set(cases.map((c) => c.id.slice(0, 3)));
    for (const id of ["A01", "A02", "A03", "B01", "B02", "B03", "B04", "B05", "B06", "B07",
      "C01", "C02", "C03", "C04", "C05", "C06", "C07", "C08", "D01", "D02", "D03", "D04", "D05"]) {
      expect(ids.has(id)).toBe(true);
    }
  });

  for (const c of cases) {
    test(`${c.id} → ${c.code}`, () => {
      const e = parseError(c.bytes, c.opts);
      expect(e.code).toBe(c.code);
      expect(e.field).toContain(c.field);
      expect(e.file).toBe("crafted.gguf");
      // The message names the file, the code and the field, and the offset when there is one.
      expect(e.message).toContain("crafted.gguf");
      expect(e.message).toContain(c.code);
      expect(e.message).toContain(e.field);
      if (e.offset !== undefined) {
        expect(e.message).toContain(`offset ${e.offset}`);
        expect(e.offset).toBeGreaterThanOrEqual(0);
        expect(e.offset).toBeLessThanOrEqual(c.bytes.length);
      }
      expect(e instanceof UnsupportedQuantTypeError).toBe(c.code === "TENSOR_UNSUPPORTED_TYPE");
    });
  }

  test("the truncation message gives the needed range and the file size", () => {
    const c = cases.find((x) => x.id.startsWith("D03 DATA_NOT_ENOUGH_DATA"))!;
    const e = parseError(c.bytes);
    expect(e.message).toMatch(/file truncated: tensor four needs bytes \[\d+, \d+\) but file has \d+/);
    expect(e.message).toContain(`file has ${c.bytes.length}`);
  });

  test("UnsupportedQuantTypeError names the type and the tensor", () => {
    const c = cases.find((x) => x.id === "C05 unsupported Q2_K")!;
    const e = parseError(c.bytes) as UnsupportedQuantTypeError;
    expect(e.typeName).toBe("Q2_K");
    expect(e.typeId).toBe(10);
    expect(e.tensor).toBe("q2k");
    // Inspection tools may opt in to known-but-unsupported types.
    const f = parseGGUF(c.bytes, { allowUnsupportedTypes: true });
    const t = f.tensorsByName.get("q2k")!;
    expect(t.typeName).toBe("Q2_K");
    expect(t.nbytes).toBe(2 * 84);
  });
});

describe("split (sharded) sets", () => {
  for (const c of craftedSplitCases()) {
    test(`${c.id} → ${c.code ?? "ok"}`, () => {
      const files = c.shards.map((b, i) => parseGGUF(b, { fileName: `shard-${i}.gguf` }));
      if (c.code === null) {
        const { shards, tensors } = validateSplit(files);
        expect(shards.map((s) => s.split!.no)).toEqual([0, 1]);
        expect([...tensors.keys()].sort()).toEqual(["a", "b", "c"]);
        expect(tensors.get("c")!.shard).toBe(1);
      } else {
        let err: unknown;
        try {
          validateSplit(files);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(GGUFError);
        expect((err as GGUFError).code).toBe(c.code);
      }
    });
  }

  test("an unsplit file validates as a set of one", () => {
    const f = parseGGUF(baseFile());
    expect(validateSplit([f]).tensors.size).toBe(3);
  });
});
