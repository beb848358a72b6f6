/**
 * Pre-flight token counts, calibrated against what providers report.
 *
 * The limiter must reserve a call's cost before the call, but only the
 * provider knows its own count (Anthropic's tokenizer is not public, and the
 * simulator counts its own way). The estimator counts the whole request with
 * `js-tiktoken` (system prompt, every message and block, tool definitions,
 * plus framing), then learns per model how the provider's count compares and
 * corrects later estimates, with a safety margin on top.
 *
 * Calibration: for the first `minSamples` calls of a model the ratio is the
 * plain mean of actual / raw; after that an exponentially weighted mean
 * (α = 0.1) so it follows drift without one odd call swinging it. A single
 * sample's ratio is clamped to [0.25, 4].
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { TokenEstimator } from "@sluice/core"
 *
 * Effect.gen(function*() {
 *   const estimator = yield* TokenEstimator.TokenEstimator
 *   const estimate = yield* estimator.estimate(request)   // reserve estimate.inputTokens / outputTokens
 *   // ... call ...
 *   yield* estimator.observe(estimate, response.usage)     // learn the provider's count
 * }).pipe(Effect.provide(TokenEstimator.layer()))
 * ```
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import { Tiktoken } from "js-tiktoken/lite"
import type * as LlmClient from "./LlmClient.js"

/** What a request is expected to take. */
export interface Estimate {
  readonly model: string
  /** Calibrated, with the safety margin: what to reserve for input. */
  readonly inputTokens: number
  /** What to reserve for output: `maxOutputTokens`, or a learned typical output. */
  readonly outputTokens: number
  /** The tokenizer's count before calibration. */
  readonly rawInputTokens: number
}

/** What the estimator has learned of a model. */
export interface Calibration {
  readonly model: string
  readonly samples: number
  /** Provider count / tokenizer count. 1 before any sample. */
  readonly inputRatio: number
  /** The learned output reservation (the percentile), once `minSamples` outputs were seen. */
  readonly typicalOutput: number | undefined
}

/** Options of the estimator. Every field has a default. */
export interface Options {
  /** The tiktoken encoding. Default `o200k_base`. */
  readonly encoding?: "o200k_base" | "cl100k_base" | undefined
  /** A fraction added to the calibrated estimate. Default 0.05. */
  readonly safetyMargin?: number | undefined
  /** Samples before the output reservation is learned, and before the ratio leaves its plain mean. Default 5. */
  readonly minSamples?: number | undefined
  /** Reserve a learned typical output instead of `maxOutputTokens` once `minSamples` were seen. Default false. */
  readonly learnOutput?: boolean | undefined
  /** The percentile of observed outputs to reserve when learning. Default 0.95. */
  readonly outputPercentile?: number | undefined
  /** Framing tokens per message. Default 4. */
  readonly overheadPerMessage?: number | undefined
  /** Framing tokens per request (and per tool definition). Default 8. */
  readonly overheadPerRequest?: number | undefined
}

/**
 * The estimator service.
 */
export class TokenEstimator extends Context.Tag("@sluice/core/TokenEstimator")<TokenEstimator, {
  readonly estimate: (request: LlmClient.Request) => Effect.Effect<Estimate>
  /** Learns from what the provider counted for a call estimated earlier. */
  readonly observe: (estimate: Estimate, usage: LlmClient.Usage) => Effect.Effect<void>
  readonly calibration: (model: string) => Effect.Effect<Calibration>
}>() {}

/** Something that turns text into a token count. */
export type Encoder = (text: string) => number

const blockText = (block: LlmClient.ContentBlock): string => {
  switch (block.type) {
    case "text":
      return block.text
    case "tool_use":
      return `${block.name}\n${JSON.stringify(block.input)}`
    case "tool_result":
      return block.content
  }
}

/**
 * The raw token count of a whole request: the system prompt, every message
 * (text, tool calls with their JSON input, tool results), every tool's name,
 * description and JSON schema, and framing: `overheadPerMessage` per message
 * (and for the system prompt), `overheadPerRequest` per request and per tool.
 */
export const countRequest = (
  encode: Encoder,
  request: LlmClient.Request,
  overhead: { readonly perMessage: number; readonly perRequest: number } = { perMessage: 4, perRequest: 8 }
): number => {
  let total = overhead.perRequest
  if (request.system !== undefined && request.system !== "") total += encode(request.system) + overhead.perMessage
  for (const message of request.messages) {
    const text = typeof message.content === "string" ? message.content : message.content.map(blockText).join("\n")
    total += encode(text) + overhead.perMessage
  }
  for (const tool of request.tools ?? []) {
    total += overhead.perRequest + encode(`${tool.name}\n${tool.description ?? ""}\n${JSON.stringify(tool.inputSchema)}`)
  }
  return total
}

interface ModelState {
  readonly samples: number
  readonly ratio: number
  /** The last outputs seen, at most `outputWindow`. */
  readonly outputs: ReadonlyArray<number>
}

const outputWindow = 1_000
const emptyState: ModelState = { samples: 0, ratio: 1, outputs: [] }

const percentile = (values: ReadonlyArray<number>, p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0
}

/** Builds an estimator; the tokenizer's ranks are loaded once, here. */
export const make = (options: Options = {}): Effect.Effect<TokenEstimator["Type"]> =>
  Effect.gen(function*() {
    const ranks = yield* Effect.promise(() =>
      options.encoding === "cl100k_base" ? import("js-tiktoken/ranks/cl100k_base") : import("js-tiktoken/ranks/o200k_base")
    )
    const tokenizer = new Tiktoken(ranks.default)
    // Special-token text in a document is just text: nothing is allowed or refused as special.
    const encode: Encoder = (text) => text.length === 0 ? 0 : tokenizer.encode(text, [], []).length
    return makeWith(encode, options)
  })

/** An estimator over any encoder (tests and other tokenizers). */
export const makeWith = (encode: Encoder, options: Options = {}): TokenEstimator["Type"] => {
  const margin = options.safetyMargin ?? 0.05
  const minSamples = Math.max(1, options.minSamples ?? 5)
  const learnOutput = options.learnOutput ?? false
  const outputPercentile = options.outputPercentile ?? 0.95
  const overhead = { perMessage: options.overheadPerMessage ?? 4, perRequest: options.overheadPerRequest ?? 8 }
  const states = Ref.unsafeMake(new Map<string, ModelState>())
  const stateOf = (model: string) => Effect.map(Ref.get(states), (map) => map.get(model) ?? emptyState)

  const typicalOutput = (state: ModelState): number | undefined =>
    state.outputs.length >= minSamples ? Math.ceil(percentile(state.outputs, outputPercentile) * (1 + margin)) : undefined

  return TokenEstimator.of({
    estimate: (request) =>
      Effect.map(stateOf(request.model), (state): Estimate => {
        const raw = countRequest(encode, request, overhead)
        const learned = learnOutput ? typicalOutput(state) : undefined
        return {
          model: request.model,
          rawInputTokens: raw,
          inputTokens: Math.ceil(raw * state.ratio * (1 + margin)),
          outputTokens: learned === undefined ? request.maxOutputTokens : Math.min(request.maxOutputTokens, Math.max(1, learned))
        }
      }).pipe(Effect.withSpan("TokenEstimator.estimate", { attributes: { model: request.model } })),
    observe: (estimate, usage) =>
      Ref.update(states, (map) => {
        const state = map.get(estimate.model) ?? emptyState
        const actual = usage.inputTokens + usage.cacheReadInputTokens + usage.cacheWriteInputTokens
        if (estimate.rawInputTokens <= 0 || actual <= 0) return map
        const sample = Math.min(4, Math.max(0.25, actual / estimate.rawInputTokens))
        const samples = state.samples + 1
        const ratio = samples <= minSamples ? state.ratio + (sample - state.ratio) / samples : state.ratio + 0.1 * (sample - state.ratio)
        const outputs = [...state.outputs.slice(-(outputWindow - 1)), usage.outputTokens]
        return new Map(map).set(estimate.model, { samples, ratio, outputs })
      }),
    calibration: (model) =>
      Effect.map(stateOf(model), (state): Calibration => ({
        model,
        samples: state.samples,
        inputRatio: state.ratio,
        typicalOutput: typicalOutput(state)
      }))
  })
}

/** The estimator with js-tiktoken. */
export const layer = (options: Options = {}): Layer.Layer<TokenEstimator> => Layer.effect(TokenEstimator, make(options))
