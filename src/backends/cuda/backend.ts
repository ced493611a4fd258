/**
 * The CUDA backend: the model's weights uploaded once in their GGUF block layout, the KV cache
 * (f16) and every activation in device memory, each op one or two kernel launches
 * (src/backends/cuda/kernels/*.ts validate the sizes, then launch cuda/*.cu). It runs on any
 * DeviceRuntime: the NVIDIA driver (driver.ts) or the host emulator (emulator.ts), which is how
 * the whole-model tests run it without a GPU.
 *
 * Per state (CudaOps): the token ids and positions of a forward call are uploaded once at its
 * start; the logits are the only thing copied back (readLogits).
 *
 * Decode steps run as one CUDA graph. A step of one token of one sequence is recorded, not
 * launched: every launcher still validates its sizes, but its launch goes into a list (the
 * KV-cache store and attention read the step's position from device memory, so the list is the
 * same bytes every token). The first such step captures the list as a graph; later steps whose
 * list is identical replay it with one launch, and a step whose list differs (another state
 * shape) captures anew. KILN_CUDA_GRAPHS=0 (read once) launches every kernel directly.
 */
import { KilnError } from "../../errors";
import { NativeBuffer, ShapeError, Tensor, byteLength, deviceName, type Device, type DType } from "../../tensor";
import { mapTensors, type AttentionOptions, type Backend, type BackendMemory, type BackendOp, type BackendOps, type GatedActivation, type KvLayout, type NormOptions, type RopeOptions } from "../backend";
import type { BatchViews, RunState } from "../../models/state";
import { subBuffer, type DeviceBuffer, type DeviceGraph, type DeviceRuntime, type Dim3 } from "./runtime";
import { storeKvF16At } from "./kernels/kv";
import * as attn from "./kernels/attention";
import * as act from "./kernels/activations";
import { copyF32 } from "./kernels/copy";
import * as mm from "./kernels/matmul";
import * as norm from "./kernels/norm";
import { rope as ropeKernel } from "./kernels/rope";

/** Weight bytes uploaded between two yields to the event loop while a model loads. */
const UPLOAD_STEP_BYTES = 256 * 2 ** 20;

/** Decode steps as CUDA graphs (default on); KILN_CUDA_GRAPHS=0 turns them off. Read once. */
const GRAPHS = process.env.KILN_CUDA_GRAPHS !== "0";

interface Launch {
  kernel: string;
  grid: Dim3;
  block: Dim3;
  sharedBytes: number;
  args: Uint8Array;
}

function sameLaunches(a: readonly Launch[], b: readonly Launch[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.kernel !== y.kernel || x.sharedBytes !== y.sharedBytes || x.args.byteLength !== y.args.byteLength) return false;
    for (let d = 0; d < 3; d++) if (x.grid[d] !== y.grid[d] || x.block[d] !== y.block[d]) return false;
    for (let j = 0; j < x.args.byteLength; j++) if (x.args[j] !== y.args[j]) return false;
  }
  return true;
}

/**
 * A runtime whose launches are recorded instead of run (everything else goes to `inner`): the
 * launchers validate as always, and the step's launches become data to capture or compare.
 */
class RecordingRuntime implements DeviceRuntime {
  launches: Launch[] = [];
  constructor(readonly inner: DeviceRuntime) {}
  get kind() {
    return this.inner.kind;
  }
  get deviceIndex() {
    return this.inner.deviceIndex;
  }
  get deviceName() {
    return this.inner.deviceName;
  }
  alloc(byteLength: number, label: string): DeviceBuffer {
    return this.inner.alloc(byteLength, label);
  }
  free(b: DeviceBuffer): void {
    this.inner.free(b);
  }
  upload(dst: DeviceBuffer, src: Uint8Array, dstOffset?: number): void {
    this.inner.upload(dst, src, dstOffset);
  }
  download(src: DeviceBuffer, dst: Uint8Array, srcOffset?: number): void {
    this.inner.download(src, dst, srcOffset);
  }
  launch(kernel: string, grid: Dim3, block: Dim3, sharedBytes: number, args: Uint8Array): void {
    // args is the caller's to give away (DeviceRuntime.launch): kept as is, not copied.
    this.launches.push({ kernel, grid: [grid[0], grid[1], grid[2]], block: [block[0], block[1], block[2]], sharedBytes, args });
  }
  synchronize(): void {
    this.inner.synchronize();
  }
  captureGraph(fn: () => void): DeviceGraph {
    return this.inner.captureGraph(fn);
  }
  dispose(): void {}
}

function fail(op: string, msg: string): never {
  throw new ShapeError(`cuda ${op}: ${msg}`);
}

/** Device memory of a tensor, checking it lives on this backend's device. */
function dev(op: string, t: Tensor, device: Device): DeviceBuffer {
  if (t.device.kind !== device.kind || t.device.index !== device.index) fail(op, `${t} is on ${deviceName(t.device)}, not ${deviceName(device)}`);
  return t.storage.buffer;
}

function expectF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== "f32") fail(op, `${t} must be f32`);
}

class DeviceMemory implements BackendMemory {
  readonly byteLength: number;
  #buf: DeviceBuffer | null;
  constructor(
    readonly rt: DeviceRuntime,
    readonly device: Device,
    byteLength: number,
    label: string,
  ) {
    this.byteLength = byteLength;
    this.#buf = rt.alloc(byteLength, label);
  }
  tensor(dtype: DType, shape: readonly number[], byteOffset = 0, name = ""): Tensor {
    if (!this.#buf) throw new KilnError("DISPOSED", `device memory ${name}: used after free()`);
    const len = byteLength(dtype, shape, "DeviceMemory.tensor");
    if (byteOffset < 0 || byteOffset + len > this.byteLength) fail("tensor", `${dtype} [${shape}] at offset ${byteOffset} does not fit in ${this.byteLength} bytes`);
    return new Tensor(dtype, shape, { device: this.device, buffer: subBuffer(this.#buf, byteOffset, len, name || this.#buf.label) }, name);
  }
  free(): void {
    if (this.#buf) this.rt.free(this.#buf);
    this.#buf = null;
  }
}

export class CudaBackend implements Backend {
  readonly kind = "cuda" as const;
  readonly kvLayout: KvLayout = "position-major";
  readonly device: Device;
  readonly #uploads: DeviceMemory[] = [];
  /** Host weight → its device copy (a tensor shared by two fields is uploaded once). */
  readonly #placed = new Map<Tensor, Tensor>();
  /** dispose() also disposes the runtime (a backend selectBackend opened). */
  readonly ownsRuntime: boolean;
  /** Decode steps run as graphs (default: unless KILN_CUDA_GRAPHS=0). */
  readonly graphs: boolean;
  constructor(
    readonly runtime: DeviceRuntime,
    opts: { ownsRuntime?: boolean; graphs?: boolean } = {},
  ) {
    this.device = Object.freeze({ kind: "cuda", index: runtime.deviceIndex });
    this.ownsRuntime = opts.ownsRuntime ?? false;
    this.graphs = opts.graphs ?? GRAPHS;
  }
  get description(): string {
    return `${deviceName(this.device)} ${this.runtime.deviceName}`;
  }
  supports(op: BackendOp, dtype: DType): boolean {
    if (op === "kvCache") return dtype === "f16";
    return mm.WEIGHT_DTYPES.includes(dtype);
  }
  allocate(byteLength: number, label: string): BackendMemory {
    return new DeviceMemory(this.runtime, this.device, byteLength, label);
  }
  placeWeights<W>(weights: W): W {
    return mapTensors(weights, (t) => this.#placed.get(t) ?? this.upload(t), (v): v is Tensor => v instanceof Tensor);
  }
  /** Uploads the tensors, yielding after every UPLOAD_STEP_BYTES. */
  *stageWeights(tensors: readonly Tensor[]): Iterable<void> {
    let since = 0;
    for (const t of tensors) {
      if (this.#placed.has(t)) continue;
      this.#placed.set(t, this.upload(t));
      since += t.byteLength;
      if (since >= UPLOAD_STEP_BYTES) {
        since = 0;
        yield;
      }
    }
  }
  /** One host tensor copied to the device (kept until dispose). */
  upload(t: Tensor): Tensor {
    if (!this.supports("linear", t.dtype)) throw new KilnError("UNSUPPORTED_TENSOR_TYPE", `${t}: the CUDA backend does not read ${t.dtype}`);
    const mem = new DeviceMemory(this.runtime, this.device, t.byteLength, t.name);
    this.#uploads.push(mem);
    const d = mem.tensor(t.dtype, t.shape, 0, t.name);
    this.runtime.upload(d.storage.buffer, t.bytes);
    return d;
  }
  createOps(state: RunState): BackendOps {
    return new CudaOps(this, state);
  }
  dispose(): void {
    for (const m of this.#uploads) m.free();
    this.#uploads.length = 0;
    this.#placed.clear();
    if (this.ownsRuntime) this.runtime.dispose();
  }
}

class CudaOps implements BackendOps {
  /** Where launches go: the device runtime, or #recorder during a graph step. */
  #rt: DeviceRuntime;
  readonly #direct: DeviceRuntime;
  readonly #recorder: RecordingRuntime;
  /** The decode graph and the launches it was captured from. */
  #graph: { graph: DeviceGraph; launches: Launch[] } | null = null;
  /** Whether the current forward call is a graph step (one token of one sequence). */
  #graphStep = false;
  /**
   * Graph steps replayed / captured (tests read them), and the last graph step's wall times:
   * recording its launches on the host, capturing or launching the graph, and waiting for the
   * logits (the device's share; bench/cuda.bench.ts reports them).
   */
  readonly graphStats = { replays: 0, captures: 0, lastStepMs: { record: 0, launch: 0, wait: 0 } };
  #stepStart = 0;
  #launched = 0;
  readonly #device: Device;
  readonly #state: RunState;
  readonly #graphs: boolean;
  /** Token ids and positions of the current forward call, on the device. */
  readonly #ids: DeviceMemory;
  readonly #idsBuf: DeviceBuffer;
  readonly #posBuf: DeviceBuffer;
  /** The positions array beginForward uploaded (rope checks it is the one it is given). */
  #positions: Int32Array | null = null;
  /** Split-KV attention partials (decode). */
  readonly #scratch: DeviceMemory;
  readonly #scratchBuf: DeviceBuffer;
  /** Host copy of the logits. */
  readonly #hostLogits: NativeBuffer;

  constructor(be: CudaBackend, state: RunState) {
    this.#rt = be.runtime;
    this.#direct = be.runtime;
    this.#recorder = new RecordingRuntime(be.runtime);
    this.#graphs = be.graphs;
    this.#device = be.device;
    this.#state = state;
    const hp = state.hp;
    const B = state.maxBatch;
    this.#ids = new DeviceMemory(this.#rt, this.#device, 2 * B * 4, "token ids and positions");
    this.#idsBuf = this.#ids.tensor("f32", [B], 0, "token ids").storage.buffer;
    this.#posBuf = this.#ids.tensor("f32", [B], B * 4, "positions").storage.buffer;
    const scratchBytes = Math.max(
      attn.splitScratchBytes(Math.min(B, attn.SPLIT_MAX_ROWS), hp.nHead, hp.headDim),
      attn.splitScratchBytes(1, hp.nHead, hp.headDim, attn.graphSplits(1, hp.nHead, hp.nKvHead, hp.headDim, state.nCtx)),
    );
    this.#scratch = new DeviceMemory(this.#rt, this.#device, scratchBytes, "attention partials");
    this.#scratchBuf = this.#scratch.tensor("f32", [scratchBytes / 4], 0, "attention partials").storage.buffer;
    this.#hostLogits = new NativeBuffer(state.logits.byteLength);
  }

  beginForward(b: BatchViews, tokens: Int32Array): void {
    this.#direct.upload(this.#idsBuf, new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    const p = b.positions;
    this.#direct.upload(this.#posBuf, new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
    this.#positions = p;
    this.#graphStep = this.#graphs && b.n === 1 && b.spans.length === 1;
    this.#stepStart = performance.now();
    this.#recorder.launches = [];
    this.#rt = this.#graphStep ? this.#recorder : this.#direct;
  }

  /** Ends a graph step: replays the graph when the step's launches are the captured ones, else captures them. */
  #runGraphStep(): void {
    const recorded = performance.now();
    this.graphStats.lastStepMs.record = recorded - this.#stepStart;
    const launches = this.#recorder.launches;
    this.#recorder.launches = [];
    this.#rt = this.#direct;
    this.#graphStep = false;
    if (!this.#graph || !sameLaunches(this.#graph.launches, launches)) {
      this.#graph?.graph.dispose();
      this.#graph = null;
      const rt = this.#direct;
      // Kernels first used by this step are compiled and loaded before the capture, not inside it.
      rt.prepare?.([...new Set(launches.map((l) => l.kernel))]);
      const graph = rt.captureGraph(() => {
        for (const l of launches) rt.launch(l.kernel, l.grid, l.block, l.sharedBytes, l.args);
      });
      this.#graph = { graph, launches };
      this.graphStats.captures++;
    } else this.graphStats.replays++;
    this.#graph.graph.launch();
    this.#launched = performance.now();
    this.graphStats.lastStepMs.launch = this.#launched - recorded;
  }

  /**
   * Benchmarks only: the captured decode step's kernels launched one at a time, each followed by
   * a synchronize, `reps` times; the median wall time per kernel name (ms per step, summed over
   * that kernel's launches) and the graph replayed whole. Null before a graph step was captured.
   */
  profileGraphStep(reps = 5): { byKernel: Map<string, number>; graphMs: number } | null {
    if (!this.#graph) return null;
    const rt = this.#direct;
    const per = new Map<string, number[]>();
    const graphTimes: number[] = [];
    for (let r = 0; r < reps; r++) {
      const sums = new Map<string, number>();
      for (const l of this.#graph.launches) {
        const t0 = performance.now();
        rt.launch(l.kernel, l.grid, l.block, l.sharedBytes, l.args);
        rt.synchronize();
        sums.set(l.kernel, (sums.get(l.kernel) ?? 0) + performance.now() - t0);
      }
      for (const [k, v] of sums) per.set(k, [...(per.get(k) ?? []), v]);
      const t0 = performance.now();
      this.#graph.graph.launch();
      rt.synchronize();
      graphTimes.push(performance.now() - t0);
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    return { byKernel: new Map([...per].map(([k, v]) => [k, median(v)])), graphMs: median(graphTimes) };
  }

  getRows(table: Tensor, ids: Int32Array, out: Tensor): void {
    const op = "getRows";
    if (table.rank !== 2) fail(op, `table ${table} must be 2-D`);
    const nRows = table.dim(0);
    const cols = table.dim(1);
    expectF32(op, out);
    if (out.rows !== ids.length || out.cols !== cols) fail(op, `${out} must be [${ids.length}, ${cols}]`);
    for (const id of ids) if (!(id >= 0 && id < nRows)) fail(op, `row id ${id} outside [0, ${nRows}) of ${table}`);
    if (this.#positions === null || ids.length > this.#state.maxBatch) fail(op, "called outside a forward call");
    mm.getRows(this.#rt, table.dtype, dev(op, table, this.#device), subBuffer(this.#idsBuf, 0, ids.length * 4), dev(op, out, this.#device), ids.length, cols, nRows);
  }

  rmsNorm(x: Tensor, weight: Tensor | null, out: Tensor, eps: number, opts: NormOptions = {}): void {
    const op = "rmsNorm";
    expectF32(op, x, out);
    if (out.rows !== x.rows || out.cols !== x.cols) fail(op, `${out} must match ${x}`);
    if (weight && (weight.dtype !== "f32" || weight.numel !== x.cols)) fail(op, `weight ${weight} must be f32 [${x.cols}]`);
    if (opts.residual && (opts.residual.dtype !== "f32" || opts.residual.numel !== x.numel)) fail(op, `residual ${opts.residual} must match ${x}`);
    const d = this.#device;
    norm.rmsNorm(this.#rt, dev(op, x, d), opts.residual ? dev(op, opts.residual, d) : null, weight ? dev(op, weight, d) : null, dev(op, out, d), x.rows, x.cols, eps);
  }

  rmsNormHeads(x: Tensor, nHead: number, weight: Tensor, eps: number): void {
    const op = "rmsNormHeads";
    expectF32(op, x, weight);
    const headDim = weight.numel;
    if (x.cols !== nHead * headDim) fail(op, `${x} rows must be n_head (${nHead}) × head_dim (${headDim})`);
    norm.rmsNormHeads(this.#rt, dev(op, x, this.#device), dev(op, weight, this.#device), x.rows, nHead, headDim, eps);
  }

  linear(w: Tensor, x: Tensor, out: Tensor): void {
    const op = "linear";
    if (w.rank !== 2) fail(op, `weight ${w} must be 2-D`);
    expectF32(op, x, out);
    const n = w.dim(0);
    const k = w.dim(1);
    if (x.cols !== k) fail(op, `${x} does not match weight ${w}: inner dims ${x.cols} ≠ ${k}`);
    if (out.rows !== x.rows || out.cols !== n) fail(op, `${out} must be [${x.rows}, ${n}]`);
    const d = this.#device;
    mm.linear(this.#rt, w.dtype, dev(op, w, d), dev(op, x, d), dev(op, out, d), n, k, x.rows);
  }

  linear3(w0: Tensor, w1: Tensor, w2: Tensor, x: Tensor, out0: Tensor, out1: Tensor, out2: Tensor): void {
    this.linear(w0, x, out0);
    this.linear(w1, x, out1);
    this.linear(w2, x, out2);
  }

  gatedFfn(gate: Tensor, up: Tensor, x: Tensor, out: Tensor, activation: GatedActivation, tmp: Tensor): void {
    const op = "gatedFfn";
    const n = gate.dim(0);
    const k = gate.dim(1);
    if (!up.hasShape(gate)) fail(op, `up ${up} must match gate ${gate}`);
    expectF32(op, x, out, tmp);
    if (x.cols !== k) fail(op, `${x} does not match ${gate}`);
    if (out.rows !== x.rows || out.cols !== n || tmp.numel < out.numel) fail(op, `${out} / ${tmp} must be [${x.rows}, ${n}]`);
    const d = this.#device;
    if (gate.dtype === up.dtype) {
      mm.gatedFfn(this.#rt, gate.dtype, dev(op, gate, d), dev(op, up, d), dev(op, x, d), dev(op, out, d), n, k, x.rows, activation, dev(op, tmp, d));
      return;
    }
    mm.linear(this.#rt, gate.dtype, dev(op, gate, d), dev(op, x, d), dev(op, out, d), n, k, x.rows);
    mm.linear(this.#rt, up.dtype, dev(op, up, d), dev(op, x, d), dev(op, tmp, d), n, k, x.rows);
    (activation === "silu" ? act.siluMul : act.geluTanhMul)(this.#rt, dev(op, out, d), dev(op, tmp, d), dev(op, out, d), out.numel);
  }

  rope(x: Tensor, nHead: number, positions: Int32Array, o: RopeOptions): void {
    const op = "rope";
    expectF32(op, x);
    if (positions !== this.#positions) fail(op, "positions must be the forward call's (b.positions)");
    if (x.cols % nHead !== 0) fail(op, `${x} row length is not a multiple of n_head ${nHead}`);
    const headDim = x.cols / nHead;
    const nRot = o.nRot ?? headDim;
    if (nRot > headDim || nRot % 2 !== 0 || nRot <= 0) fail(op, `n_rot ${nRot} must be even and ≤ head_dim ${headDim}`);
    if (o.freqFactors && (o.freqFactors.dtype !== "f32" || o.freqFactors.numel !== nRot / 2)) fail(op, `freq_factors ${o.freqFactors} must be f32 [${nRot / 2}]`);
    if (!(o.freqBase > 0)) fail(op, `freq_base must be > 0, got ${o.freqBase}`);
    const d = this.#device;
    ropeKernel(this.#rt, dev(op, x, d), subBuffer(this.#posBuf, 0, x.rows * 4), o.freqFactors ? dev(op, o.freqFactors, d) : null, x.rows, nHead, headDim, nRot, o.mode === "neox" ? 2 : 0, o.freqBase, o.freqScale ?? 1);
  }

  addBias(x: Tensor, bias: Tensor): void {
    const op = "addBias";
    expectF32(op, x, bias);
    if (bias.numel !== x.cols) fail(op, `bias ${bias} must have ${x.cols} elements`);
    act.addBias(this.#rt, dev(op, x, this.#device), dev(op, bias, this.#device), x.rows, x.cols);
  }

  add(dst: Tensor, src: Tensor): void {
    const op = "add";
    expectF32(op, dst, src);
    if (dst.numel !== src.numel) fail(op, `${src} must match ${dst}`);
    act.add(this.#rt, dev(op, dst, this.#device), dev(op, src, this.#device), dst.numel);
  }

  scale(x: Tensor, s: number): void {
    const op = "scale";
    expectF32(op, x);
    if (!Number.isFinite(s)) fail(op, `scale must be finite, got ${s}`);
    act.scale(this.#rt, dev(op, x, this.#device), x.numel, s);
  }

  storeKV(src: Tensor, cache: Tensor, pos0: number): void {
    const op = "storeKV";
    expectF32(op, src);
    const cacheRows = cache.sliceRows(pos0, src.rows).reshape([src.rows, src.cols]);
    if (cacheRows.dtype !== "f16") fail(op, `the CUDA KV cache is f16, not ${cacheRows.dtype}`);
    if (cacheRows.numel !== src.numel) fail(op, `${src} does not fit ${cacheRows}`);
    if (this.#graphStep) {
      // The row's address changes every token; the graph's store reads the position on the device.
      const rowElems = src.numel / src.rows;
      const pos = this.#positions![0]!;
      const rows = dev(op, cacheRows, this.#device);
      // The sequence's cache region starts pos rows before the row written (a graph step is one span).
      const base = { ptr: rows.ptr - pos * rowElems * 2, byteLength: this.#state.nCtx * rowElems * 2, label: rows.label };
      storeKvF16At(this.#rt, dev(op, src, this.#device), base, this.#posBuf, rowElems, src.rows, this.#state.nCtx);
      return;
    }
    act.f32ToF16(this.#rt, dev(op, src, this.#device), dev(op, cacheRows, this.#device), src.numel);
  }

  attention(q: Tensor, k: Tensor, v: Tensor, nKv: number, out: Tensor, nHead: number, o: AttentionOptions): void {
    const op = "attention";
    expectF32(op, q, out);
    if (k.dtype !== "f16" || v.dtype !== "f16") fail(op, `the CUDA KV cache is f16 (k ${k}, v ${v})`);
    if (q.rank !== 3 || k.rank !== 3) fail(op, `q ${q} and k ${k} must be [rows, heads, head_dim]`);
    const nQ = q.dim(0);
    const qHeads = q.dim(1);
    const headDim = q.dim(2);
    const nCtx = k.dim(0);
    const nKvHead = k.dim(1);
    const kDim = k.dim(2);
    if (qHeads !== nHead || kDim !== headDim) fail(op, `q ${q} does not match n_head ${nHead} / k ${k}`);
    if (out.numel !== q.numel) fail(op, `${out} must match ${q}`);
    const d = this.#device;
    const common = { nQ, nHead, nKvHead, headDim, window: o.window ?? 0, scale: o.scale, softcap: o.softcap ?? 0, kvRowCapacity: nCtx };
    if (this.#graphStep) {
      // Graph step: the position is read on the device; the host's nKv/qPos0 stay constant so the
      // launch's bytes are the same every token.
      if (nKv !== o.qPos0 + nQ || o.qPos0 !== this.#positions![0]) fail(op, "a graph step attends causally at its own position");
      attn.flashAttention(this.#rt, dev(op, q, d), dev(op, k, d), dev(op, v, d), dev(op, out, d), { ...common, nKv: nQ, qPos0: 0, posDev: this.#posBuf, path: "split" }, this.#scratchBuf);
      return;
    }
    attn.flashAttention(this.#rt, dev(op, q, d), dev(op, k, d), dev(op, v, d), dev(op, out, d), { ...common, nKv, qPos0: o.qPos0 }, this.#scratchBuf);
  }

  copyRow(t: Tensor, from: number, to: number): void {
    const op = "copyRow";
    expectF32(op, t);
    const w = t.cols;
    if (!(from >= 0 && from < t.rows && to >= 0 && to < t.rows)) fail(op, `rows ${from} → ${to} outside ${t}`);
    const b = dev(op, t, this.#device);
    copyF32(this.#rt, subBuffer(b, from * w * 4, w * 4), subBuffer(b, to * w * 4, w * 4), w);
  }

  readLogits(logits: Tensor): Tensor {
    const op = "readLogits";
    expectF32(op, logits);
    const graphStep = this.#graphStep;
    if (graphStep) this.#runGraphStep();
    const bytes = this.#hostLogits.bytes.subarray(0, logits.byteLength);
    this.#direct.download(dev(op, logits, this.#device), bytes);
    if (graphStep) this.graphStats.lastStepMs.wait = performance.now() - this.#launched;
    return new Tensor("f32", logits.shape, bytes, "logits");
  }

  dispose(): void {
    this.#graph?.graph.dispose();
    this.#graph = null;
    this.#ids.free();
    this.#scratch.free();
    this.#hostLogits.free();
  }
}

