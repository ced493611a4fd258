/**
 * A model file mapped read-only (PROT_READ, MAP_PRIVATE) by libkiln. Weights are used in place;
 * a stray write faults at once instead of changing the user's file on disk (Bun.mmap maps
 * shared and writable by default, hardening case M01).
 */
import { toArrayBuffer } from "bun:ffi";
import { existsSync, statSync } from "node:fs";
import { KilnError } from "../errors";
import { kiln } from "../ffi/library";
import { detach } from "../tensor";

export class MappedFile {
  readonly path: string;
  readonly byteLength: number;
  #addr: number | null;
  #bytes: Uint8Array | null;

  constructor(path: string) {
    if (!existsSync(path)) throw new KilnError("FILE", `${path}: no such file`);
    const st = statSync(path);
    if (!st.isFile()) throw new KilnError("FILE", `${path}: not a regular file`);
    if (st.size === 0) throw new KilnError("FILE", `${path}: file is empty`);
    const len = new BigUint64Array(1);
    const addr = kiln().kiln_mmap_readonly(Buffer.from(path + "\0"), len);
    if (!addr) throw new KilnError("FILE", `${path}: could not map the file read-only`);
    this.path = path;
    this.byteLength = Number(len[0]);
    this.#addr = addr as number;
    this.#bytes = new Uint8Array(toArrayBuffer(addr, 0, this.byteLength));
  }

  /** The whole file; reading is free, writing faults. */
  get bytes(): Uint8Array {
    if (!this.#bytes) throw new KilnError("DISPOSED", `${this.path}: the mapping was released (model disposed)`);
    return this.#bytes;
  }

  close(): void {
    if (this.#addr === null) return;
    detach(this.#bytes!.buffer); // weight views kept by callers read as empty, never as unmapped pages
    kiln().kiln_munmap(this.#addr, this.byteLength);
    this.#addr = null;
    this.#bytes = null;
  }
}
