/**
 * Pre-flight token counts, calibrated against what providers report.
 *
 * The limiter must reserve a call's cost before the call, but only the
 * provider knows its own count (Anthropic's tokenizer is not public, and the
 * simulator counts its own way). The estimator counts the whole request with
 * `js-tiktoken` ({@link countRequest}: system prompt, every message and block,
 * tool definitions, framing), then learns per model and request shape how the
 * provider's count compares, and corrects later estimates, with a safety
 * margin on top:
 *
 *     inputTokens = ⌈(raw × inputRatio + toolOverhead) × (1 + safetyMargin)⌉
 *
 * Tool use: a request that offers tools also pays the provider's hidden
 * tool-use system prompt (`toolOverhead`, a few hundred tokens on Claude),
 * which no count of the request can see. It comes from a table per model
 * (`ToolOverhead.defaultTable`, overridable with the `toolOverhead` option),
 * is added unscaled (it is already in the provider's tokens), and is taken out
 * of the provider's count before calibrating.
 *
 * Calibration (per model and shape: `plain` requests, and requests with
 * `tools`, learn apart, so a stream of one cannot skew the other's estimates;
 * a shape with fewer than `minSamples` samples starts from the other shape's
 * ratio): each observed call gives a sample `(actual − toolOverhead) / raw`,
 * where `actual` is the provider's whole input count
 * (`inputTokens + cacheReadInputTokens + cacheWriteInputTokens`), clamped to
 * [0.25, 4] so one absurd report cannot poison the model. The learned ratio is
 * an exponentially weighted mean with α = max(1/n, 0.1): the plain mean of
 * the first 10 samples (no arbitrary prior), then an EWMA that follows drift
 * over roughly the last 20 calls while one odd call moves it by a tenth of its
 * error at most. Until `minSamples` samples were seen, the ratio used is
 * blended from its prior (1, or the other shape's ratio) toward the learned
 * one in proportion to the samples seen (`prior + (learned − prior) × n /
 * minSamples`), so the first call moves estimates by at most 1/minSamples of
 * its error.
 *
 * Output: `maxOutputTokens` is reserved unless `learnOutput` is on and
 * `minSamples` outputs were seen; then a high percentile (nearest rank) of the
 * last 1,000 observed outputs of the model, plus the margin, never above
 * `maxOutputTokens`.
 *
 * Speed: the encoding's ranks (bundled with `js-tiktoken`) are read into a
 * table of their own, some 20 MB, in about a second; js-tiktoken's `Tiktoken`
 * took some 115 MB resident and several seconds, and kept a decode table the
 * estimator never uses. Each encoding is loaded once per process, lazily (on
 * the first estimate that needs it, not when an estimator is made; concurrent
 * first estimates share one load), and shared (it holds no calibration;
 * every estimator has its own state). Counting is tiktoken's: its pre-split
 * into pieces, then its byte-pair merge, through a bounded memo of piece
 * counts, so repeated words cost a map lookup; a piece longer than 64 UTF-8
 * bytes (a run of `=`, a long unbroken word, a CJK paragraph without
 * punctuation) is counted in slices of at most 64 bytes, because the merge is
 * quadratic in a piece's length and a 100,000-character run would otherwise
 * take minutes. That slicing is the only place a whole count may differ from
 * js-tiktoken's `Tiktoken.encode`, by about a token per slice; calibration
 * absorbs most of it.
 *
 * Long texts ({@link sampled}): a text longer than `sampleAbove` characters
 * (default 32,768, some 6,000 tokens of prose) is not counted whole: 32
 * windows of about 512 characters spread evenly over it are, and its count
 * is its length times their tokens per character, raised by one standard
 * error of that mean (the windows' spread), so that a text whose kind varies
 * (code and its comments) is not under-counted by the luck of the sample. A
 * 40,000-token document then costs what a 6,000-token one does, and unlike a
 * bare length ratio the count still sees what kind of text it is (prose,
 * code, digits, CJK); calibration corrects the sample's error as it corrects
 * the tokenizer's (BENCHMARKS.md, "Estimation cost").
 *
 * Counted once: an estimator remembers the count of each text of 1,024
 * characters or more it counted (the last 4,000,000 characters of such texts,
 * shared by the process's tiktoken estimators of one setting), so a retry, a
 * fallback rung, the Router's choice and the Governor's admission of one
 * document, or a job's worst-case line and its call, count its text once.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient, TokenEstimator } from "@sluice/core"
 *
 * const call = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const estimator = yield* TokenEstimator.TokenEstimator
 *     const client = yield* LlmClient.LlmClient
 *     const estimate = yield* estimator.estimate(request) // reserve estimate.inputTokens + estimate.outputTokens
 *     const response = yield* client.complete(request)
 *     yield* estimator.observe(estimate, response.usage)   // learn the provider's count
 *     return response
 *   })
 *
 * // call(request).pipe(Effect.provide(TokenEstimator.layer({ learnOutput: true })))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type { TiktokenBPE } from "js-tiktoken/lite"
import { withSpan } from "./internal/tracing.js"
import type * as LlmClient from "./LlmClient.js"
import * as ToolOverhead from "./ToolOverhead.js"

// ---------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------

/**
 * The shapes that calibrate apart: `plain` requests, and requests that offer
 * `tools` (whose tool definitions the provider renders its own way).
 *
 * @example
 * ```ts
 * import { type LlmClient, TokenEstimator } from "@sluice/core"
 *
 * const shapeOfCall = (request: LlmClient.Request): TokenEstimator.Shape => TokenEstimator.shapeOf(request)
 * // "tools" when request.tools is not empty, else "plain"
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Shape = "plain" | "tools"

/**
 * The shape of a request: `tools` when it offers at least one tool.
 *
 * @example
 * ```ts
 * import { TokenEstimator } from "@sluice/core"
 *
 * TokenEstimator.shapeOf({ model: "m", messages: [], maxOutputTokens: 1 }) // "plain"
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const shapeOf = (request: LlmClient.Request): Shape =>
  request.tools !== undefined && request.tools.length > 0 ? "tools" : "plain"

/**
 * What a request is expected to take. Hand it back to `observe` with the
 * provider's usage once the call returns.
 *
 * @example
 * ```ts
 * import type { TokenEstimator } from "@sluice/core"
 *
 * const estimate: TokenEstimator.Estimate = {
 *   model: "claude-haiku-4-5",
 *   inputTokens: 1_344,
 *   outputTokens: 1_024,
 *   rawInputTokens: 1_280
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Estimate {
  readonly model: string
  /** Calibrated, with the safety margin, an integer: what to reserve for input. */
  readonly inputTokens: number
  /** What to reserve for output: `maxOutputTokens`, or a learned typical output. */
  readonly outputTokens: number
  /** The tokenizer's count (with framing) before calibration. */
  readonly rawInputTokens: number
  /** The shape the estimate was calibrated as; `observe` learns for it. Absent (hand-made estimates): `plain`. */
  readonly shape?: Shape | undefined
  /** The provider's tool-use overhead included in `inputTokens` (before the margin); `observe` takes it out. Absent: 0. */
  readonly toolOverheadTokens?: number | undefined
}

/**
 * What the estimator has learned of a model.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const learned = Effect.gen(function*() {
 *   const estimator = yield* TokenEstimator.TokenEstimator
 *   const { inputRatio, samples } = yield* estimator.calibration("claude-haiku-4-5")
 *   const tools = yield* estimator.calibration("claude-haiku-4-5", "tools")
 *   return { inputRatio, samples, toolsRatio: tools.inputRatio }
 * })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Calibration {
  readonly model: string
  /** The request shape this calibration is for. */
  readonly shape: Shape
  /** Calls of this shape whose input count was learned from. */
  readonly samples: number
  /**
   * Provider count (less the tool overhead) / tokenizer count, as estimates of
   * this shape use it now: blended from the prior (the other shape's ratio, or
   * 1) before `minSamples`. The prior before any sample.
   */
  readonly inputRatio: number
  /** The learned output reservation (percentile + margin), once `minSamples` outputs were seen; whether used depends on `learnOutput`. */
  readonly typicalOutput: number | undefined
}

/**
 * The tiktoken encodings the estimator can load (offline: the ranks ship with `js-tiktoken`).
 *
 * @since 0.1.0
 * @category models
 */
export type Encoding = "o200k_base" | "cl100k_base"

/**
 * Options of the estimator. Every field has a default; values out of range are
 * clamped (a negative margin to 0, a percentile into [0, 1], …), a non-finite
 * one falls back to the default.
 *
 * @example
 * ```ts
 * import { TokenEstimator } from "@sluice/core"
 *
 * const EstimatorLive = TokenEstimator.layer({ safetyMargin: 0.1, learnOutput: true, outputPercentile: 0.99 })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The tiktoken encoding. Default `o200k_base`. */
  readonly encoding?: Encoding | undefined
  /** The fraction added to calibrated input (and to a learned output). Default 0.05. */
  readonly safetyMargin?: number | undefined
  /** Samples before the ratio is used whole and a learned output may be reserved. Default 5. */
  readonly minSamples?: number | undefined
  /** Reserve a learned typical output instead of `maxOutputTokens` once `minSamples` outputs were seen. Default false. */
  readonly learnOutput?: boolean | undefined
  /** The percentile of observed outputs a learned reservation takes. Default 0.95. */
  readonly outputPercentile?: number | undefined
  /** Framing tokens per message, per tool definition and for the system prompt. Default 4. */
  readonly overheadPerMessage?: number | undefined
  /** Framing tokens once per request. Default 8. */
  readonly overheadPerRequest?: number | undefined
  /**
   * The provider's tool-use overhead per model, added to requests with tools.
   * Default `ToolOverhead.defaultTable`; to add or change entries, spread it:
   * `{ ...ToolOverhead.defaultTable, "acme/llama-3": { auto: 40, any: 40 } }`.
   * `{}` turns it off (calibration of the `tools` shape then absorbs it).
   */
  readonly toolOverhead?: ToolOverhead.Table | undefined
  /** The provider this estimator's calls go to, to pick `provider/…` entries of `toolOverhead`. Default: entries of any provider. */
  readonly provider?: string | undefined
  /**
   * Texts longer than this many characters are counted from a sample
   * ({@link sampled}). Default 32,768 with tiktoken (`make`), at least 16,384;
   * `Infinity` counts every text whole. `makeWith` counts whole unless set.
   */
  readonly sampleAbove?: number | undefined
}

/**
 * The estimator service: `estimate` before a call, `observe` after it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { type LlmClient, TokenEstimator } from "@sluice/core"
 *
 * const estimateOf = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const estimator = yield* TokenEstimator.TokenEstimator
 *     return yield* estimator.estimate(request)
 *   })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class TokenEstimator extends Context.Tag("@sluice/core/TokenEstimator")<TokenEstimator, {
  /** The calibrated input and the output to reserve for a request. */
  readonly estimate: (request: LlmClient.Request) => Effect.Effect<Estimate>
  /** Learns from what the provider counted for a call estimated earlier. */
  readonly observe: (estimate: Estimate, usage: LlmClient.Usage) => Effect.Effect<void>
  /** What has been learned of a model's requests of a shape (default `plain`) so far. */
  readonly calibration: (model: string, shape?: Shape) => Effect.Effect<Calibration>
}>() {}

// ---------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------

/**
 * Something that turns text into a token count. {@link encoder} builds the
 * tiktoken one; tests may pass a cheap one to {@link makeWith}.
 *
 * @example
 * ```ts
 * import type { TokenEstimator } from "@sluice/core"
 *
 * const roughly: TokenEstimator.Encoder = (text) => Math.ceil(text.length / 4)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Encoder = (text: string) => number

/**
 * Framing tokens {@link countRequest} adds: `perMessage` for each message,
 * each tool definition and the system prompt; `perRequest` once.
 *
 * @example
 * ```ts
 * import { TokenEstimator } from "@sluice/core"
 *
 * const request = { model: "gpt-4o", messages: [{ role: "user", content: "Say hi" }], maxOutputTokens: 64 } as const
 * TokenEstimator.countRequest((text) => Math.ceil(text.length / 4), request, { perMessage: 3, perRequest: 0 })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Overhead {
  readonly perMessage: number
  readonly perRequest: number
}

/**
 * The defaults: 4 per message, 8 per request.
 *
 * @example
 * ```ts
 * import { TokenEstimator } from "@sluice/core"
 *
 * const request = { model: "claude-haiku-4-5", messages: [{ role: "user", content: "Say hi" }], maxOutputTokens: 64 } as const
 * TokenEstimator.countRequest((text) => Math.ceil(text.length / 4), request, TokenEstimator.defaultOverhead)
 * ```
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultOverhead: Overhead = { perMessage: 4, perRequest: 8 }

const stringify = Option.liftThrowable((value: unknown): string | undefined => JSON.stringify(value))

/** JSON text of a tool input; a value JSON cannot render (a cycle, a bigint) counts as nothing. */
const jsonText = (value: unknown): string => Option.getOrUndefined(stringify(value)) ?? ""

const countBlock = (encode: Encoder, block: LlmClient.ContentBlock): number => {
  switch (block.type) {
    case "text":
      return encode(block.text)
    case "tool_use":
      return encode(block.id) + encode(block.name) + encode(jsonText(block.input))
    case "tool_result":
      return encode(block.toolUseId) + encode(block.content)
  }
}

/**
 * The raw token count of a whole request, before calibration:
 *
 * - the system prompt, if any and not empty: its tokens + `perMessage`;
 * - each message: `perMessage` + its string content, or the sum of its blocks —
 *   a text block's text, a `tool_use` block's id, name and `JSON.stringify(input)`,
 *   a `tool_result` block's tool-use id and content;
 * - each tool: `perMessage` + its name, description and `JSON.stringify(inputSchema)`;
 * - `perRequest` once.
 *
 * Pure: the same encoder and request give the same number, and appending a
 * message, a block or a tool never lowers it.
 *
 * @example
 * ```ts
 * import { TokenEstimator } from "@sluice/core"
 *
 * const raw = TokenEstimator.countRequest((text) => Math.ceil(text.length / 4), {
 *   model: "claude-haiku-4-5",
 *   messages: [{ role: "user", content: "Say hi" }],
 *   maxOutputTokens: 64
 * }) // 2 + 4 + 8
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const countRequest = (
  encode: Encoder,
  request: LlmClient.Request,
  overhead: Overhead = defaultOverhead
): number => {
  let total = overhead.perRequest
  if (request.system !== undefined && request.system !== "") total += overhead.perMessage + encode(request.system)
  for (const message of request.messages) {
    total += overhead.perMessage
    if (typeof message.content === "string") total += encode(message.content)
    else for (const block of message.content) total += countBlock(encode, block)
  }
  for (const tool of request.tools ?? []) {
    total += overhead.perMessage + encode(tool.name) + encode(tool.description ?? "") +
      encode(jsonText(tool.inputSchema))
  }
  return total
}

/** Longer pieces are counted in slices of at most this many UTF-8 bytes (see the module doc). */
const maxPieceBytes = 64
/** Piece counts remembered per encoding, at most; the memo is dropped whole when full. */
const memoLimit = 50_000

/** UTF-8 bytes of the code unit at `index` (a surrogate half counts 2, the pair 4). */
const utf8Bytes = (text: string, index: number): number => {
  const code = text.charCodeAt(index)
  return code < 0x80 ? 1 : code < 0x800 || (code >= 0xd800 && code <= 0xdfff) ? 2 : 3
}

const isLowSurrogate = (code: number): boolean => code >= 0xdc00 && code <= 0xdfff

/** Where the slice of `piece` starting at `start` ends: at most `maxPieceBytes` bytes, never inside a surrogate pair. */
const sliceEnd = (piece: string, start: number): number => {
  let end = start
  let bytes = 0
  while (end < piece.length && bytes + utf8Bytes(piece, end) <= maxPieceBytes) {
    bytes += utf8Bytes(piece, end)
    end += 1
  }
  if (end < piece.length && end - start > 1 && isLowSurrogate(piece.charCodeAt(end))) end -= 1
  return Math.max(end, start + 1)
}

/**
 * The rank table of an encoding: each token's bytes, as a one-byte string
 * (a character per byte), to its rank. Built straight from the ranks file
 * (`! offset token…` lines of base64), about 200,000 short strings: a third
 * of what js-tiktoken's `Tiktoken` holds (its rank keys are comma-joined byte
 * lists, and it keeps a decode table the estimator never uses), and no
 * intermediate object of every token on the way.
 */
const rankTable = (bpeRanks: string): Map<string, number> => {
  const ranks = new Map<string, number>()
  let from = 0
  while (from < bpeRanks.length) {
    let to = bpeRanks.indexOf("\n", from)
    if (to < 0) to = bpeRanks.length
    const fields = bpeRanks.slice(from, to).split(" ")
    from = to + 1
    if (fields.length < 2) continue
    const offset = Number.parseInt(fields[1]!, 10)
    // atob gives the decoded bytes as a one-byte string: the table's key as is.
    for (let i = 2; i < fields.length; i++) ranks.set(atob(fields[i]!), offset + i - 2)
  }
  return ranks
}

const utf8 = new TextEncoder()

/** A piece's UTF-8 bytes as a one-byte string; an ASCII piece is its own. */
const byteString = (piece: string): string => {
  for (let i = 0; i < piece.length; i++) {
    if (piece.charCodeAt(i) >= 0x80) return String.fromCharCode(...utf8.encode(piece))
  }
  return piece
}

/**
 * Tokens of one piece's bytes: tiktoken's byte-pair merge (the lowest-ranked
 * adjacent pair first, the leftmost among equals), counting the parts left.
 * Every single byte has a rank, so every part is a token.
 */
const mergeCount = (bytes: string, ranks: Map<string, number>): number => {
  if (bytes.length <= 1 || ranks.has(bytes)) return Math.min(1, bytes.length)
  // starts[i] is where part i begins; part i ends where part i + 1 begins.
  const starts = Array.from({ length: bytes.length + 1 }, (_, i) => i)
  while (starts.length > 2) {
    let lowest = Number.POSITIVE_INFINITY
    let at = -1
    for (let i = 0; i + 2 < starts.length; i++) {
      const rank = ranks.get(bytes.slice(starts[i]!, starts[i + 2]!))
      if (rank !== undefined && rank < lowest) {
        lowest = rank
        at = i
      }
    }
    if (at < 0) break
    starts.splice(at + 1, 1)
  }
  return starts.length - 1
}

/**
 * An encoder over loaded ranks: tiktoken's pre-split, its merge over a
 * compact rank table, a memo per piece, long pieces sliced. Special-token
 * text in a prompt is just text (never refused, never a special token).
 */
const tiktokenEncoder = (bpe: TiktokenBPE): Encoder => {
  const ranks = rankTable(bpe.bpe_ranks)
  const pieces = new RegExp(bpe.pat_str, "gu")
  const memo = new Map<string, number>()
  const countPiece = (piece: string): number => {
    const known = memo.get(piece)
    if (known !== undefined) return known
    // A slice of a long piece may pre-split differently: split it as tiktoken's encode would.
    let count = 0
    for (const match of piece.matchAll(pieces)) count += mergeCount(byteString(match[0]), ranks)
    if (memo.size >= memoLimit) memo.clear()
    memo.set(piece, count)
    return count
  }
  return (text) => {
    let total = 0
    // matchAll copies the regex, so the shared one's lastIndex never moves.
    for (const match of text.matchAll(pieces)) {
      const piece = match[0]
      // A code unit is at most 3 bytes: up to 21 units always fit in one slice.
      if (piece.length * 3 <= maxPieceBytes) {
        total += countPiece(piece)
        continue
      }
      for (let start = 0; start < piece.length;) {
        const end = sliceEnd(piece, start)
        total += countPiece(end - start === piece.length ? piece : piece.slice(start, end))
        start = end
      }
    }
    return total
  }
}

// Loaded tokenizers, one per encoding for the whole process: ranks are
// immutable, loading them takes ~1 s and ~20 MB, and they hold no
// calibration. Concurrent first asks share one load (`loading`), so the ranks
// are never decoded twice; nothing else is shared.
const encoders = new Map<Encoding, Encoder>()
const loading = new Map<Encoding, Promise<Encoder>>()

const load = (encoding: Encoding): Promise<Encoder> => {
  const started = loading.get(encoding)
  if (started !== undefined) return started
  const promise = (
    encoding === "cl100k_base" ? import("js-tiktoken/ranks/cl100k_base") : import("js-tiktoken/ranks/o200k_base")
  ).then(
    (ranks) => {
      const encode = tiktokenEncoder(ranks.default)
      encoders.set(encoding, encode)
      return encode
    },
    (error: unknown) => {
      // A failed import may be retried by a later ask.
      loading.delete(encoding)
      throw error
    }
  )
  loading.set(encoding, promise)
  return promise
}

/**
 * The tiktoken encoder of an encoding, loaded from the ranks bundled with
 * `js-tiktoken` (no network) the first time it is asked for, then shared:
 * the ranks are decoded once per process, however many estimators ask and
 * however many ask at once.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const count = Effect.gen(function*() {
 *   const encode = yield* TokenEstimator.encoder("o200k_base")
 *   return encode("hello world") // 2
 * })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const encoder = (encoding: Encoding = "o200k_base"): Effect.Effect<Encoder> =>
  Effect.suspend(() => {
    const loaded = encoders.get(encoding)
    if (loaded !== undefined) return Effect.succeed(loaded)
    return Effect.promise(() => load(encoding)).pipe(
      Effect.withSpan("TokenEstimator.encoder", { attributes: { encoding }, captureStackTrace: false })
    )
  })

/** Windows a long text is sampled in, and the characters of each. */
const sampleWindows = 32
const sampleWindowChars = 512
/** The default `sampleAbove` of `make`, and the least any estimator takes. */
const defaultSampleAbove = 32_768
const minSampleAbove = 16_384

const isSpace = (code: number): boolean => code === 32 || code === 10 || code === 9 || code === 13

/** The first whitespace at or after `from` within 64 characters, so a window cuts no word in two; else `from`. */
const boundaryAfter = (text: string, from: number): number => {
  const limit = Math.min(text.length, from + 64)
  for (let i = from; i < limit; i++) if (isSpace(text.charCodeAt(i))) return i
  return Math.min(from, text.length)
}

/**
 * An encoder that counts a text longer than `above` characters from a
 * sample: 32 windows of about 512 characters, spread evenly over the text and
 * cut at whitespace where there is some, are counted with `encode`; the
 * text's count is its length times their tokens per character plus one
 * standard error of that mean (from the windows' spread), rounded up. Shorter
 * texts (at least 16,384 characters are) are counted whole. The cost is
 * bounded (some 16,000 characters counted, whatever the length), and the
 * count follows the kind of text (prose, code, digits, CJK), which a bare
 * length ratio does not; a document whose kind changes between windows (a
 * CJK passage in English prose, shorter than a thirty-second of it) is where
 * it errs most.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const count = (fortyThousandTokenReport: string) =>
 *   Effect.gen(function*() {
 *     const encode = TokenEstimator.sampled(yield* TokenEstimator.encoder(), 32_768)
 *     return encode(fortyThousandTokenReport) // a few % above the whole count, for a sixth of its CPU
 *   })
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const sampled = (encode: Encoder, above: number = defaultSampleAbove): Encoder => {
  const threshold = Math.max(minSampleAbove, above)
  return (text) => {
    if (!(text.length > threshold)) return encode(text)
    const stride = text.length / sampleWindows
    const rates: Array<number> = []
    let tokens = 0
    let chars = 0
    for (let window = 0; window < sampleWindows; window++) {
      const start = window === 0 ? 0 : boundaryAfter(text, Math.floor(window * stride))
      const end = boundaryAfter(text, Math.min(text.length, start + sampleWindowChars))
      if (end <= start) continue
      const counted = encode(text.slice(start, end))
      rates.push(counted / (end - start))
      tokens += counted
      chars += end - start
    }
    if (rates.length < 2) return encode(text)
    const rate = tokens / chars
    let squares = 0
    for (const each of rates) squares += (each - rate) ** 2
    const standardError = Math.sqrt(squares / (rates.length - 1) / rates.length)
    return Math.ceil(text.length * (rate + standardError))
  }
}

/** Texts shorter than this are not remembered whole (their pieces are, in the encoder's memo). */
const rememberFrom = 1_024
/** Characters of remembered texts, at most; the oldest go first. */
const rememberChars = 4_000_000

/** `encode` with a memo of whole texts of `rememberFrom` characters or more, so that one text is counted once. */
const remembering = (encode: Encoder): Encoder => {
  const counts = new Map<string, number>()
  let held = 0
  return (text) => {
    if (text.length < rememberFrom) return encode(text)
    // A long string's hash is its length in V8, and the same string object compares at once: a cheap lookup.
    const known = counts.get(text)
    if (known !== undefined) return known
    const count = encode(text)
    counts.set(text, count)
    held += text.length
    while (held > rememberChars) {
      const oldest = counts.keys().next().value!
      held -= oldest.length
      counts.delete(oldest)
    }
    return count
  }
}

// The counting encoders of `make`, one per encoding and sampling threshold for
// the process, so a job's estimators (its worst-case line, its Governor) share
// what they counted.
const counters = new Map<string, Encoder>()

const counterOf = (encoding: Encoding, exact: Encoder, sampleAbove: number): Encoder => {
  const id = `${encoding}\u0000${sampleAbove}`
  let counter = counters.get(id)
  if (counter === undefined) {
    counter = remembering(sampled(exact, sampleAbove))
    counters.set(id, counter)
  }
  return counter
}

// ---------------------------------------------------------------------------
// Calibration (plain functions over plain data)
// ---------------------------------------------------------------------------

interface InputState {
  /** Input samples learned from. */
  readonly samples: number
  /** The exponentially weighted mean of (actual − tool overhead) / raw. */
  readonly learnedRatio: number
}

interface ModelState {
  /** Input calibration per request shape. */
  readonly input: { [S in Shape]: InputState }
  /** The last outputs, oldest first, at most `outputWindow`. */
  readonly outputs: Array<number>
  /** The same outputs, ascending. */
  readonly sortedOutputs: Array<number>
}

interface Settings {
  readonly margin: number
  readonly minSamples: number
  readonly learnOutput: boolean
  readonly outputPercentile: number
  readonly overhead: Overhead
  readonly toolOverhead: ToolOverhead.Table
  readonly provider: string | undefined
}

/** Outputs remembered per model, at most. */
const outputWindow = 1_000
/** The EWMA's weight once past the plain mean of the first 1 / α samples. */
const alpha = 0.1
const minSampleRatio = 0.25
const maxSampleRatio = 4

const unlearned: InputState = { samples: 0, learnedRatio: 1 }
/** The state of a model nothing was observed for: read, never changed. */
const emptyState: ModelState = { input: { plain: unlearned, tools: unlearned }, outputs: [], sortedOutputs: [] }

/** A fresh state, for a model's first observation. */
const newState = (): ModelState => ({ input: { plain: unlearned, tools: unlearned }, outputs: [], sortedOutputs: [] })

const clamp = (value: number, min: number, max: number): number => Math.min(max, Math.max(min, value))

const setting = (value: number | undefined, fallback: number, min: number, max: number): number =>
  value === undefined || !Number.isFinite(value) ? fallback : clamp(value, min, max)

const settingsOf = (options: Options): Settings => ({
  margin: setting(options.safetyMargin, 0.05, 0, Number.MAX_SAFE_INTEGER),
  minSamples: Math.ceil(setting(options.minSamples, 5, 1, Number.MAX_SAFE_INTEGER)),
  learnOutput: options.learnOutput ?? false,
  outputPercentile: setting(options.outputPercentile, 0.95, 0, 1),
  overhead: {
    perMessage: Math.ceil(setting(options.overheadPerMessage, defaultOverhead.perMessage, 0, Number.MAX_SAFE_INTEGER)),
    perRequest: Math.ceil(setting(options.overheadPerRequest, defaultOverhead.perRequest, 0, Number.MAX_SAFE_INTEGER))
  },
  toolOverhead: options.toolOverhead ?? ToolOverhead.defaultTable,
  provider: options.provider
})

/** `Math.ceil` that ignores floating-point dust: 100 × 1.05 is 105, not 106. */
const ceil = (value: number): number => Math.ceil(value - 1e-9)

/** A learned ratio blended from `prior` toward the learned one until `minSamples`. */
const blend = (prior: number, input: InputState, settings: Settings): number =>
  prior + (input.learnedRatio - prior) * Math.min(1, input.samples / settings.minSamples)

const otherShape = (shape: Shape): Shape => shape === "plain" ? "tools" : "plain"

/**
 * The ratio estimates of `shape` use: its own learned ratio, blended until
 * `minSamples` from the other shape's (itself blended from 1), so a model's
 * first tool call starts from what its plain calls taught, and the reverse.
 */
const inputRatio = (state: ModelState, shape: Shape, settings: Settings): number =>
  blend(blend(1, state.input[otherShape(shape)], settings), state.input[shape], settings)

/** The learned output reservation: nearest-rank percentile + margin, once `minSamples` outputs were seen. */
const typicalOutput = (state: ModelState, settings: Settings): number | undefined => {
  const sorted = state.sortedOutputs
  if (sorted.length < settings.minSamples) return undefined
  const rank = clamp(Math.ceil(settings.outputPercentile * sorted.length) - 1, 0, sorted.length - 1)
  return ceil(sorted[rank]! * (1 + settings.margin))
}

/** The first index whose value is not below `value`. */
const lowerBound = (sorted: ReadonlyArray<number>, value: number): number => {
  let low = 0
  let high = sorted.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (sorted[middle]! < value) low = middle + 1
    else high = middle
  }
  return low
}

/**
 * Remembers one output, in place: the estimator's own state, changed in one
 * synchronous step (copying two arrays of up to 1,000 numbers per call made
 * most of an estimate's garbage).
 */
const rememberOutput = (state: ModelState, output: number): void => {
  const { outputs, sortedOutputs } = state
  if (outputs.length >= outputWindow) sortedOutputs.splice(lowerBound(sortedOutputs, outputs.shift()!), 1)
  sortedOutputs.splice(lowerBound(sortedOutputs, output), 0, output)
  outputs.push(output)
}

const learnInput = (state: ModelState, shape: Shape, raw: number, actual: number): void => {
  const input = state.input[shape]
  const sample = clamp(actual / raw, minSampleRatio, maxSampleRatio)
  const samples = input.samples + 1
  const weight = Math.max(1 / samples, alpha)
  state.input[shape] = { samples, learnedRatio: input.learnedRatio + weight * (sample - input.learnedRatio) }
}

/**
 * One observation folded in, in place: the provider's count less the tool
 * overhead the estimate added, learned for the estimate's shape. A missing or
 * non-positive input count teaches nothing about the ratio.
 */
const observeState = (state: ModelState, estimate: Estimate, usage: LlmClient.Usage): void => {
  const actual = usage.inputTokens + usage.cacheReadInputTokens + usage.cacheWriteInputTokens
  const fixed = estimate.toolOverheadTokens !== undefined && Number.isFinite(estimate.toolOverheadTokens)
    ? Math.max(0, estimate.toolOverheadTokens)
    : 0
  if (
    estimate.rawInputTokens > 0 && Number.isFinite(estimate.rawInputTokens) && actual > 0 && Number.isFinite(actual)
  ) {
    learnInput(state, estimate.shape ?? "plain", estimate.rawInputTokens, actual - fixed)
  }
  if (Number.isFinite(usage.outputTokens) && usage.outputTokens >= 0) rememberOutput(state, usage.outputTokens)
}

// ---------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------

const build = (
  counter: Effect.Effect<Encoder>,
  settings: Settings,
  // Each model's state, owned by this estimator and changed only in synchronous steps.
  states: Map<string, ModelState>
): TokenEstimator["Type"] => {
  const stateOf = (model: string) => Effect.sync(() => states.get(model) ?? emptyState)
  return TokenEstimator.of({
    // No generator and no `Effect.fn`: a plain chain of two steps, and a span only when a tracer reads it.
    estimate: (request: LlmClient.Request) =>
      withSpan(
        Effect.flatMap(counter, (encode) =>
          Effect.map(
            Effect.sync(() => states.get(request.model) ?? emptyState),
            (state): Estimate => {
              const raw = countRequest(encode, request, settings.overhead)
              const shape = shapeOf(request)
              const toolOverheadTokens = ToolOverhead.ofRequest(settings.toolOverhead, request, settings.provider)
              const learned = settings.learnOutput ? typicalOutput(state, settings) : undefined
              return {
                model: request.model,
                rawInputTokens: raw,
                inputTokens: ceil(
                  (raw * inputRatio(state, shape, settings) + toolOverheadTokens) * (1 + settings.margin)
                ),
                outputTokens: learned === undefined
                  ? request.maxOutputTokens
                  : Math.min(request.maxOutputTokens, Math.max(1, learned)),
                shape,
                toolOverheadTokens
              }
            }
          )),
        "TokenEstimator.estimate",
        { attributes: { model: request.model }, captureStackTrace: false }
      ),
    observe: (estimate, usage) =>
      Effect.sync(() => {
        let state = states.get(estimate.model)
        if (state === undefined) {
          state = newState()
          states.set(estimate.model, state)
        }
        observeState(state, estimate, usage)
      }),
    calibration: (model, shape = "plain") =>
      Effect.map(stateOf(model), (state): Calibration => ({
        model,
        shape,
        samples: state.input[shape].samples,
        inputRatio: inputRatio(state, shape, settings),
        typicalOutput: typicalOutput(state, settings)
      }))
  })
}

/** `sampleAbove` as an option gives it: a finite value at least 16,384, `Infinity`, or `fallback`. */
const sampleAboveOf = (options: Options, fallback: number): number =>
  options.sampleAbove === Number.POSITIVE_INFINITY
    ? Number.POSITIVE_INFINITY
    : setting(options.sampleAbove, fallback, minSampleAbove, Number.MAX_SAFE_INTEGER)

/**
 * Builds an estimator with js-tiktoken. The encoding's ranks are loaded on the
 * process's first estimate that needs them (about a second), once, and shared;
 * each estimator learns on its own. Texts above `sampleAbove` characters are
 * counted from a sample ({@link sampled}), and each long text once.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const estimate = Effect.gen(function*() {
 *   const estimator = yield* TokenEstimator.make({ safetyMargin: 0.1 })
 *   return yield* estimator.estimate({
 *     model: "claude-haiku-4-5",
 *     messages: [{ role: "user", content: "Say hi" }],
 *     maxOutputTokens: 64
 *   })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<TokenEstimator["Type"]> =>
  Effect.gen(function*() {
    const encoding = options.encoding ?? "o200k_base"
    const sampleAbove = sampleAboveOf(options, defaultSampleAbove)
    let counter: Encoder | undefined
    const counting = Effect.suspend(() =>
      counter !== undefined
        ? Effect.succeed(counter)
        : Effect.map(encoder(encoding), (exact) => (counter = counterOf(encoding, exact, sampleAbove)))
    )
    return build(counting, settingsOf(options), new Map())
  })

/**
 * An estimator over any encoder, built at once (its state is fresh on every
 * call): for tests, or another tokenizer. `options.encoding` is ignored; texts
 * are counted whole unless `options.sampleAbove` is set, and each long text
 * once per estimator.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const EstimatorFast = Layer.succeed(
 *   TokenEstimator.TokenEstimator,
 *   TokenEstimator.makeWith((text) => Math.ceil(text.length / 4))
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = (encode: Encoder, options: Options = {}): TokenEstimator["Type"] =>
  build(
    Effect.succeed(remembering(sampled(encode, sampleAboveOf(options, Number.POSITIVE_INFINITY)))),
    settingsOf(options),
    new Map()
  )

/**
 * The estimator with js-tiktoken, as a layer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * const program = Effect.flatMap(TokenEstimator.TokenEstimator, (estimator) => estimator.calibration("claude-haiku-4-5"))
 * const runnable = program.pipe(Effect.provide(TokenEstimator.layer({ learnOutput: true })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<TokenEstimator> => Layer.effect(TokenEstimator, make(options))
