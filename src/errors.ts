/**
 * kiln's one error family. Every error kiln throws on purpose is a `KilnError` with a stable
 * `code` callers can switch on; the subclasses add what their layer knows:
 *
 *   GGUFError   (src/gguf/errors.ts)  a rejected model file: code, field, byte offset, file name
 *   ModelError  (src/models/hparams.ts) a file that parses but is not a model kiln runs
 *   ShapeError  (src/tensor.ts)        an op called with wrong dtypes, shapes or buffer sizes
 *   KilnError itself                   the runtime's own: CONTEXT_BUSY, DISPOSED, BAD_OPTION, …
 *
 * Codes of the runtime (the GGUF and model layers list theirs beside their classes):
 */
export type RuntimeErrorCode =
  /** A context already runs a generation; one at a time per context (create another context). */
  | "CONTEXT_BUSY"
  /** The model or context was disposed; nothing can be called on it any more. */
  | "DISPOSED"
  /** An option or argument is out of range or of the wrong type (the message names it). */
  | "BAD_OPTION"
  /** The prompt does not fit in the context. */
  | "PROMPT_TOO_LONG"
  /** Tokens would run past the context length. */
  | "CONTEXT_FULL"
  /** The KV cache and buffers of a context would exceed the memory budget. */
  | "CONTEXT_TOO_LARGE"
  /** The model file is missing, not a regular file, empty, or cannot be mapped. */
  | "FILE"
  /** The kernel library could not be found or loaded. */
  | "LIBRARY"
  /**
   * A chat template failed: it does not parse, raised (`raise_exception`, e.g. a role it does not
   * support), hit a limit (steps, output size, time, recursion), or got non-plain data. The
   * message names the template and the cause.
   */
  | "CHAT_TEMPLATE"
  /** A JSON schema for constrained decoding is malformed: the message gives its JSON path. */
  | "BAD_SCHEMA"
  /** A JSON schema uses a keyword (or form) that constrained decoding does not support: the message names it and its path. */
  | "UNSUPPORTED_SCHEMA"
  /**
   * The CUDA backend: no usable GPU or driver, or a driver call failed. The message starts with
   * the call and CUDA's error name ("cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (...)").
   */
  | "CUDA"
  /** NVRTC could not compile a kernel file: the message names the file and architecture and holds NVRTC's log. */
  | "CUDA_COMPILE";

/**
 * The error kiln throws on purpose, with a stable `code` to switch on (subclasses: GGUFError,
 * ModelError, ShapeError).
 */
export class KilnError extends Error {
  /** The class name, as `Error.name` ("KilnError"). */
  override name = "KilnError";
  /** Stable, machine-readable: see RuntimeErrorCode, GGUFErrorCode and ModelError's codes. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** A usage error: `what` (an option or argument name) is out of range or of the wrong type. */
export function badOption(what: string, message: string): KilnError {
  return new KilnError("BAD_OPTION", `${what}: ${message}`);
}
