/**
 * kiln's public API.
 *
 *   import { loadModel } from "kiln";
 *   const model = await loadModel("model.gguf", { threads: 4 });
 *   for await (const { text } of model.generate("The capital of France is", { maxTokens: 16, temperature: 0 })) process.stdout.write(text);
 *   model.dispose();
 */
export { loadModel, Model, type GenerateOptions, type GenerateResult, type GeneratedPiece, type LoadOptions, type Timings } from "./runtime/model";
export { createSampler, type SamplingOptions, type Sampler } from "./runtime/sampling";
export { Tensor, NativeBuffer, ShapeError, type DType } from "./tensor";
export * as ops from "./backends/cpu";
export { parseGGUF, GGUFWriter, GGUFError, UnsupportedQuantTypeError } from "./gguf";
export { ModelError } from "./models/hparams";
export { loadLibrary, detectCpuLevel, type CpuLevel } from "./ffi/library";
