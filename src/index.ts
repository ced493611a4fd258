/**
 * kiln's public API: what a user touches, and nothing more. The kernel-level op set is the
 * `kiln/ops` entry point (src/ops.ts).
 *
 *   import { loadModel } from "kiln";
 *   const model = await loadModel("model.gguf");
 *   for await (const { text } of model.generate("The capital of France is", { maxTokens: 16, temperature: 0 })) process.stdout.write(text);
 *   model.dispose();
 */
export { loadModel, Model, type LoadOptions } from "./runtime/model";
export {
  Context,
  PREFILL_CHUNK_FLOPS,
  PREFILL_LAYER_FLOPS,
  defaultPrefillChunk,
  defaultBatchPrefillChunk,
  type ContextMemory,
  type ContextOptions,
  type GenerateOptions,
  type GenerateResult,
  type GeneratedPiece,
  type SpeculativeOptions,
  type SpeculativeStats,
  type Timings,
} from "./runtime/context";
export { Batch, BATCH_LIMITS, type BatchOptions, type SequenceHandle, type SequenceListener, type SequenceOptions } from "./runtime/batch";
export { type FinishReason } from "./runtime/reply";
export { type KvType } from "./models/state";
export { startServer, type RunningServer, type ServerOptions } from "./server/http";
export { type Engine, type EngineStats } from "./server/engine";
export { ChatSession, type ChatReply, type ChatSessionOptions } from "./chat/session";
export { BUILTIN_CHAT_TEMPLATES, renderChatTemplate, type ChatMessage, type ChatTemplateOptions } from "./chat/template";
export { compileJsonSchema, type JsonSchema } from "./chat/json-schema";
export { createSampler, argmax, type SamplingOptions, type Sampler } from "./runtime/sampling";
export { formatProfile, profileDecode, type DecodeProfile, type OpShare } from "./runtime/profile";
export { KilnError, type RuntimeErrorCode } from "./errors";
export { GGUFError, UnsupportedQuantTypeError, type GGUFErrorCode } from "./gguf";
export { ModelError, type HParams } from "./models/hparams";
export { ShapeError, type DType, type Device, type DeviceStorage } from "./tensor";
export { type DeviceOption } from "./backends/select";
export { probeCuda, type CudaProbe, type CudaDevice } from "./backends/cuda/driver";
export type { DeviceBuffer } from "./backends/cuda/runtime";
export type { Tensor } from "./tensor";
export type { Tokenizer, EncodeOptions, DecodeOptions, StreamDecoder } from "./tokenizer";
export { parseGGUF, GGUFWriter, type GGUFFile } from "./gguf";
export { AMX_STATUS, amxBf16Status, amxStatus, BF16_STATUS, bf16Status, cpuInfo, detectCpuLevel, loadedLibrary, packLayersDefault, PREFETCH_POLICIES, prefetchPolicy, type AmxStatus, type Bf16Status, type CpuInfo, type CpuLevel, type PrefetchPolicy } from "./ffi/library";
