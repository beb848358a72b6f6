/**
 * Prices per model, as data validated by `Schema`: USD per million tokens for
 * input, output, cache reads and cache writes.
 *
 * The default table holds the list prices Anthropic and OpenAI published for
 * these models when it was written (November 2026 as far as this repository
 * knows; check them before you rely on them) and is meant to be replaced:
 * `Pricing.layer(myTable)`. A model missing from the table is an
 * `UnknownModel` error, never a zero cost. Dated model names
 * (`claude-sonnet-4-5-20250929`) find their entry by the longest matching prefix.
 *
 * Money is kept in integer micro-dollars (1e-6 USD) wherever it is added up,
 * so sums do not drift; the API speaks USD as numbers.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as LlmClient from "./LlmClient.js"
import { UnknownModel } from "./SluiceError.js"

const UsdPerMTok = Schema.Number.pipe(Schema.finite(), Schema.nonNegative())

/**
 * One model's prices, USD per million tokens.
 *
 * @since 0.1.0
 * @category utilities
 */
export const ModelPrice = Schema.Struct({
  inputPerMTok: UsdPerMTok,
  outputPerMTok: UsdPerMTok,
  cacheReadPerMTok: UsdPerMTok,
  cacheWritePerMTok: UsdPerMTok
})
/**
 * @since 0.1.0
 * @category models
 */
export type ModelPrice = typeof ModelPrice.Type

/**
 * A price table: model name (or prefix) to its prices.
 *
 * @since 0.1.0
 * @category utilities
 */
export const PriceTable = Schema.Record({ key: Schema.String, value: ModelPrice })
/**
 * @since 0.1.0
 * @category models
 */
export type PriceTable = typeof PriceTable.Type

/**
 * List prices per million tokens (input, output, cache read, cache write). Replace them with yours.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTable: PriceTable = {
  "claude-opus-4-1": { inputPerMTok: 15, outputPerMTok: 75, cacheReadPerMTok: 1.5, cacheWritePerMTok: 18.75 },
  "claude-opus-4": { inputPerMTok: 15, outputPerMTok: 75, cacheReadPerMTok: 1.5, cacheWritePerMTok: 18.75 },
  "claude-sonnet-4-5": { inputPerMTok: 3, outputPerMTok: 15, cacheReadPerMTok: 0.3, cacheWritePerMTok: 3.75 },
  "claude-sonnet-4": { inputPerMTok: 3, outputPerMTok: 15, cacheReadPerMTok: 0.3, cacheWritePerMTok: 3.75 },
  "claude-haiku-4-5": { inputPerMTok: 1, outputPerMTok: 5, cacheReadPerMTok: 0.1, cacheWritePerMTok: 1.25 },
  "claude-3-5-haiku": { inputPerMTok: 0.8, outputPerMTok: 4, cacheReadPerMTok: 0.08, cacheWritePerMTok: 1 },
  "gpt-4o": { inputPerMTok: 2.5, outputPerMTok: 10, cacheReadPerMTok: 1.25, cacheWritePerMTok: 2.5 },
  "gpt-4o-mini": { inputPerMTok: 0.15, outputPerMTok: 0.6, cacheReadPerMTok: 0.075, cacheWritePerMTok: 0.15 },
  "gpt-4.1": { inputPerMTok: 2, outputPerMTok: 8, cacheReadPerMTok: 0.5, cacheWritePerMTok: 2 },
  "gpt-4.1-mini": { inputPerMTok: 0.4, outputPerMTok: 1.6, cacheReadPerMTok: 0.1, cacheWritePerMTok: 0.4 }
}

// Defined in `SluiceError` with every error a call can fail with; named here as the price table's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  UnknownModel
} from "./SluiceError.js"

/**
 * A price table that could not be accepted; each issue names its field (`claude-x.outputPerMTok`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPriceTable extends Data.TaggedError("InvalidPriceTable")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid price table: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

/**
 * Validates a price table; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeTable = (input: unknown): Either.Either<PriceTable, InvalidPriceTable> =>
  Either.mapLeft(
    Schema.decodeUnknownEither(PriceTable, { errors: "all", onExcessProperty: "error" })(input),
    (error) =>
      new InvalidPriceTable({
        issues: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
          path: issue.path.map(String).join("."),
          message: issue.message
        }))
      })
  )

/**
 * The entry of a model: exact, else the longest table key the model starts with.
 *
 * @since 0.1.0
 * @category utilities
 */
export const lookup = (table: PriceTable, model: string): Either.Either<ModelPrice, UnknownModel> => {
  const exact = table[model]
  if (exact !== undefined) return Either.right(exact)
  let best: string | undefined
  for (const key of Object.keys(table)) {
    if (model.startsWith(`${key}-`) && (best === undefined || key.length > best.length)) best = key
  }
  return best === undefined ? Either.left(new UnknownModel({ model })) : Either.right(table[best]!)
}

/** Micro-dollars (integer) of a token count at a price per million tokens. */
const micros = (tokens: number, perMTok: number): number => Math.round(tokens * perMTok)

/**
 * The cost of a usage, in micro-dollars: every part at its own price.
 *
 * @since 0.1.0
 * @category utilities
 */
export const costMicros = (price: ModelPrice, usage: LlmClient.Usage): number =>
  micros(usage.inputTokens, price.inputPerMTok) +
  micros(usage.outputTokens, price.outputPerMTok) +
  micros(usage.cacheReadInputTokens, price.cacheReadPerMTok) +
  micros(usage.cacheWriteInputTokens, price.cacheWritePerMTok)

/**
 * The cost of each part of a usage, in micro-dollars, each at its own price; they add up to {@link costMicros}.
 *
 * @since 0.1.0
 * @category utilities
 */
export const costPartsMicros = (price: ModelPrice, usage: LlmClient.Usage): {
  readonly input: number
  readonly output: number
  readonly cacheRead: number
  readonly cacheWrite: number
} => ({
  input: micros(usage.inputTokens, price.inputPerMTok),
  output: micros(usage.outputTokens, price.outputPerMTok),
  cacheRead: micros(usage.cacheReadInputTokens, price.cacheReadPerMTok),
  cacheWrite: micros(usage.cacheWriteInputTokens, price.cacheWritePerMTok)
})

/**
 * What {@link worstCaseMicros} needs to know of a call.
 *
 * @since 0.1.0
 * @category models
 */
export interface WorstCaseCall {
  readonly inputTokens: number
  readonly maxOutputTokens: number
  /** The request marks a prompt-cache breakpoint: its input may all be written to the cache, at the write price. */
  readonly cacheable?: boolean | undefined
}

/**
 * The most a call can cost, in micro-dollars: `max_tokens` of output, and all
 * input at the full input price, or at the cache-write price when the call is
 * `cacheable` and writes cost more (Anthropic's: 1.25× the input price).
 *
 * @since 0.1.0
 * @category utilities
 */
export const worstCaseMicros = (price: ModelPrice, call: WorstCaseCall): number =>
  micros(
    call.inputTokens,
    call.cacheable === true ? Math.max(price.inputPerMTok, price.cacheWritePerMTok) : price.inputPerMTok
  ) +
  micros(call.maxOutputTokens, price.outputPerMTok)

/**
 * USD of micro-dollars.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toUsd = (amount: number): number => amount / 1_000_000

/**
 * Micro-dollars of USD.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromUsd = (usd: number): number => Math.round(usd * 1_000_000)

/**
 * The price table as a service.
 *
 * @since 0.1.0
 * @category services
 */
export class Pricing extends Context.Tag("@sluice/core/Pricing")<Pricing, {
  readonly table: PriceTable
  readonly price: (model: string) => Effect.Effect<ModelPrice, UnknownModel>
  /** USD of a usage. */
  readonly cost: (model: string, usage: LlmClient.Usage) => Effect.Effect<number, UnknownModel>
  /** USD of the worst case of a call. */
  readonly worstCase: (model: string, call: WorstCaseCall) => Effect.Effect<number, UnknownModel>
}>() {}

/**
 * A pricing service over a table (validated).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (input: unknown = defaultTable): Effect.Effect<Pricing["Type"], InvalidPriceTable> =>
  Effect.map(decodeTable(input), (table) => {
    const price = (model: string) => lookup(table, model)
    return Pricing.of({
      table,
      price: (model) => price(model),
      cost: (model, usage) => Effect.map(price(model), (p) => toUsd(costMicros(p, usage))),
      worstCase: (model, call) => Effect.map(price(model), (p) => toUsd(worstCaseMicros(p, call)))
    })
  })

/**
 * Pricing from a table, the default one when absent.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (table: unknown = defaultTable): Layer.Layer<Pricing, InvalidPriceTable> =>
  Layer.effect(Pricing, make(table))
