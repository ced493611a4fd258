/**
 * Seeded PRNG for sampling: **xoshiro128\*\*** (Blackman & Vigna, 2018), 128 bits of state,
 * period 2^128 − 1, passes BigCrush. It is all 32-bit integer math, so it is fast in JS
 * (Math.imul, no BigInt) and its state fits in a Uint32Array(4) that is trivial to snapshot.
 *
 * Seeding: the seed integer is expanded into the four state words with splitmix32, which is the
 * authors' recommended way to seed xoshiro from a small seed (never yields the all-zero state in
 * practice and decorrelates neighbouring seeds).
 *
 * We do not try to reproduce llama.cpp's `std::mt19937` stream: its doubles come from libstdc++'s
 * `generate_canonical`, and even with the same draws llama.cpp's unstable partial sort changes
 * which token a draw lands on (see notes/model-facts.md §5). Same seed → same sequence *here*.
 */

/** llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed". -1 is accepted for the same reason. */
export const DEFAULT_SEED = 0xffffffff;

export class Rng {
  /** The whole generator state; `snapshot()`/`restore()` copy it. */
  private readonly s = new Uint32Array(4);
  /** The seed actually in use (a random one when none was given). */
  readonly seed: number;

  /**
   * @param seed any integer in ±2^53; `undefined`, −1 or 0xFFFFFFFF (llama.cpp's default seed)
   *   draw a random seed from `crypto.getRandomValues`.
   */
  constructor(seed?: number) {
    this.seed = isRandomSeed(seed) ? randomSeed() : checkSeed(seed!);
    this.reseed(this.seed);
  }

  /** Build a generator from raw state words (for test vectors and `clone`). */
  static fromState(state: ArrayLike<number>): Rng {
    const r = new Rng(0);
    r.restore(state);
    return r;
  }

  /** Restart the stream from `seed` (splitmix32 expansion of both 32-bit halves). */
  reseed(seed: number): void {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 4294967296) >>> 0;
    let x = (lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    // xoshiro must never sit in the all-zero state (it would stay there forever).
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1;
  }

  /** Next 32-bit unsigned output. */
  nextU32(): number {
    const s = this.s;
    const s0 = s[0]!, s1 = s[1]!, s2 = s[2]!, s3 = s[3]!;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    s[0] = s0 ^ n3;
    s[1] = s1 ^ n2;
    s[2] = n2 ^ t;
    s[3] = rotl(n3, 11);
    return result;
  }

  /**
   * Uniform double in [0, 1) with 53 random bits (two 32-bit draws, like libstdc++'s
   * generate_canonical<double>), so cumulative-sum draws over ~262k tokens have no visible bias.
   */
  nextFloat(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** A copy of the current state; `restore(snapshot)` rewinds to it. */
  snapshot(): Uint32Array {
    return this.s.slice();
  }

  restore(state: ArrayLike<number>): void {
    if (state.length !== 4) throw new Error(`Rng.restore: expected 4 state words, got ${state.length}`);
    for (let i = 0; i < 4; i++) this.s[i] = state[i]! >>> 0;
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) {
      throw new Error("Rng.restore: the all-zero state is invalid for xoshiro128**");
    }
  }

  /** An independent generator that continues from the same point (same future sequence). */
  clone(): Rng {
    const r = Rng.fromState(this.s);
    (r as { seed: number }).seed = this.seed;
    return r;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function isRandomSeed(seed: number | undefined): boolean {
  return seed === undefined || seed === -1 || seed === DEFAULT_SEED;
}

function checkSeed(seed: number): number {
  if (!Number.isSafeInteger(seed)) throw new Error(`Rng: seed must be a safe integer, got ${seed}`);
  return seed;
}

/** A fresh random 32-bit seed (llama.cpp uses std::random_device for its default seed). */
function randomSeed(): number {
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf);
  // Avoid handing back the "random" sentinel itself, so `new Rng(r.seed)` replays this stream.
  return buf[0] === DEFAULT_SEED ? 0 : buf[0]!;
}
