/**
 * Prices per model, as data validated by `Schema`: USD per million tokens for
 * input, output, cache reads and cache writes.
 *
 * The default table holds the list prices Anthropic and OpenAI publish, checked
 * on {@link pricesCheckedOn} against the providers' pricing pages (named, with
 * every caveat, in `internal/prices.ts`); prices change, so the table is meant
 * to be replaced or extended: `Pricing.layer(myTable)`, or a LiteLLM
 * `model_prices_and_context_window.json` merged over it with
 * {@link layerLiteLlm} (`@sluice/core/Pricing/LiteLlm` reads it from a file).
 *
 * A model is priced by its own entry, never by a shorter family's:
 * `claude-opus-4-5` is not `claude-opus-4`, `gpt-4.1-nano` is not `gpt-4.1`.
 * The published snapshots and aliases of each family
 * (`claude-opus-4-5-20251101`, `gpt-4.1-2025-04-14`, `claude-3-5-haiku-latest`)
 * have entries of their own. A name the table lacks is inferred only when it is
 * the same model as an entry: the entry's name plus a date (`-YYYYMMDD`,
 * `-YYYY-MM-DD`) or `-latest`. The service logs a warning the first time it
 * prices each inferred name. Anything else is an `UnknownModel` error naming the
 * model and the families the table knows, never a zero cost or a guess.
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
import * as Prices from "./internal/prices.js"
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
 * The date the default table was last checked against the providers' published prices.
 *
 * @since 0.1.0
 * @category constants
 */
export const pricesCheckedOn: string = Prices.checkedOn

/**
 * List prices per million tokens (input, output, cache read, cache write) of
 * Anthropic's and OpenAI's models: every family under its own name and under
 * each of its published snapshot names and aliases. Replace or extend it with yours.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTable: PriceTable = Object.fromEntries(
  Object.entries(Prices.families).flatMap(([family, { names, price }]) =>
    [family, ...names].map((name) => [name, price] as const)
  )
)

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

/** A dated snapshot (`-20251101`, `-2025-04-14`) or the `-latest` alias of the name before it. */
const sameModelSuffix =
  /-(?:(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])|latest)$/

/**
 * The families of a table: its names that are not a dated snapshot or `-latest` alias of another.
 *
 * @since 0.1.0
 * @category utilities
 */
export const knownFamilies = (table: PriceTable): ReadonlyArray<string> =>
  Object.keys(table).filter((name) => {
    const base = name.replace(sameModelSuffix, "")
    return base === name || table[base] === undefined
  }).sort()

/**
 * How a model found its price: its own entry (`entry === model`), or the entry
 * of the same model without its date or `-latest` suffix (`inferred`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  readonly price: ModelPrice
  /** The table name whose price this is. */
  readonly entry: string
  /** The price is the entry of the model's name without its date or `-latest` suffix. */
  readonly inferred: boolean
}

/**
 * The price of a model and where it came from: its own entry, else the entry
 * of the same name without a date (`-YYYYMMDD`, `-YYYY-MM-DD`) or `-latest`
 * suffix, else `UnknownModel`. A longer family name never falls back to a
 * shorter one (`claude-opus-4-5` is not `claude-opus-4`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const resolve = (table: PriceTable, model: string): Either.Either<Resolved, UnknownModel> => {
  const own = table[model]
  if (own !== undefined) return Either.right({ price: own, entry: model, inferred: false })
  const base = model.replace(sameModelSuffix, "")
  const same = base === model ? undefined : table[base]
  return same === undefined
    ? Either.left(new UnknownModel({ model, known: knownFamilies(table) }))
    : Either.right({ price: same, entry: base, inferred: true })
}

/**
 * The price of a model: its own entry, else the same model's (see {@link resolve}); silent about inference.
 *
 * @since 0.1.0
 * @category utilities
 */
export const lookup = (table: PriceTable, model: string): Either.Either<ModelPrice, UnknownModel> =>
  Either.map(resolve(table, model), (resolved) => resolved.price)

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
 * A pricing service over a table (validated). A model priced by inference
 * (see {@link resolve}) logs one warning per name and service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (input: unknown = defaultTable): Effect.Effect<Pricing["Type"], InvalidPriceTable> =>
  Effect.map(decodeTable(input), (table) => {
    // One entry per distinct inferred model name the service was asked about: bounded by the names callers use.
    const warned = new Set<string>()
    const price = (model: string): Effect.Effect<ModelPrice, UnknownModel> =>
      Either.match(resolve(table, model), {
        onLeft: Effect.fail,
        onRight: (resolved) => {
          if (!resolved.inferred || warned.has(model)) return Effect.succeed(resolved.price)
          warned.add(model)
          return Effect.as(
            Effect.logWarning(
              `Sluice prices model "${model}" as "${resolved.entry}" (same model, no entry of its own): add it to the price table if its price differs`
            ).pipe(Effect.annotateLogs({ model, priceEntry: resolved.entry })),
            resolved.price
          )
        }
      })
    return Pricing.of({
      table,
      price,
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

const UsdPerToken = Schema.Number.pipe(Schema.finite(), Schema.nonNegative())

/**
 * One model of a LiteLLM `model_prices_and_context_window.json`: USD per token.
 * Other fields (context sizes, `supports_*`, per-image prices…) are ignored.
 *
 * @since 0.1.0
 * @category utilities
 */
export const LiteLlmEntry = Schema.Struct({
  input_cost_per_token: Schema.optionalWith(UsdPerToken, { exact: true }),
  output_cost_per_token: Schema.optionalWith(UsdPerToken, { exact: true }),
  cache_read_input_token_cost: Schema.optionalWith(UsdPerToken, { exact: true }),
  cache_creation_input_token_cost: Schema.optionalWith(UsdPerToken, { exact: true }),
  litellm_provider: Schema.optionalWith(Schema.String, { exact: true }),
  mode: Schema.optionalWith(Schema.String, { exact: true })
})
/**
 * @since 0.1.0
 * @category models
 */
export type LiteLlmEntry = typeof LiteLlmEntry.Type

/** LiteLLM modes of the calls Sluice prices by token; other modes (images, embeddings, audio…) are skipped. */
const pricedModes: ReadonlySet<string> = new Set(["chat", "completion", "responses"])

/** USD per token to USD per million tokens, rounded to 1e-9 so that `3e-6` reads back as 3. */
const perMTok = (perToken: number): number => Math.round(perToken * 1e15) / 1e9

/**
 * Decodes a LiteLLM price file (`{ "<model>": { "input_cost_per_token": …, … } }`)
 * into a price table. The `sample_spec` entry, entries of another `mode` than
 * `chat`, `completion` or `responses`, and entries without both an input and
 * an output price per token are skipped (a `null` price is absent): a model
 * skipped stays unpriced, never half free. A missing cache-read or
 * cache-creation price is the input price (no discount assumed). A price that
 * is not a finite non-negative number is an error naming the model and field
 * (`gpt-x.output_cost_per_token`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeLiteLlm = (input: unknown): Either.Either<PriceTable, InvalidPriceTable> => {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return Either.left(
      new InvalidPriceTable({ issues: [{ path: "", message: "Expected an object of model name to prices" }] })
    )
  }
  const issues: Array<{ readonly path: string; readonly message: string }> = []
  const table: Record<string, ModelPrice> = {}
  for (const [model, value] of Object.entries(input)) {
    if (model === "sample_spec") continue
    // Some derived files write `null` for a price they do not know: the same as leaving it out.
    const present = typeof value === "object" && value !== null
      ? Object.fromEntries(Object.entries(value).filter(([, field]) => field !== null))
      : value
    const decoded = Schema.decodeUnknownEither(LiteLlmEntry, { errors: "all" })(present)
    if (Either.isLeft(decoded)) {
      for (const issue of ParseResult.ArrayFormatter.formatErrorSync(decoded.left)) {
        issues.push({ path: [model, ...issue.path.map(String)].join("."), message: issue.message })
      }
      continue
    }
    const entry = decoded.right
    if (entry.mode !== undefined && !pricedModes.has(entry.mode)) continue
    const { input_cost_per_token: inputCost, output_cost_per_token: outputCost } = entry
    // Half a per-token price (LiteLLM's per-second video models give only the output one) is no
    // price: the model stays out of the table, an `UnknownModel` when called, rather than half free.
    if (inputCost === undefined || outputCost === undefined) continue
    table[model] = {
      inputPerMTok: perMTok(inputCost),
      outputPerMTok: perMTok(outputCost),
      cacheReadPerMTok: perMTok(entry.cache_read_input_token_cost ?? inputCost),
      cacheWritePerMTok: perMTok(entry.cache_creation_input_token_cost ?? inputCost)
    }
  }
  return issues.length > 0 ? Either.left(new InvalidPriceTable({ issues })) : Either.right(table)
}

/**
 * A LiteLLM price file's entries merged over a table (the default one when
 * absent): a model in both takes the file's price.
 *
 * @since 0.1.0
 * @category utilities
 */
export const mergeLiteLlm = (
  input: unknown,
  base: PriceTable = defaultTable
): Either.Either<PriceTable, InvalidPriceTable> =>
  Either.map(decodeLiteLlm(input), (prices) => ({ ...base, ...prices }))

/**
 * Pricing from a LiteLLM price file's contents (already parsed JSON) merged
 * over a table, the default one when absent. To read the file, see
 * `@sluice/core/Pricing/LiteLlm`.
 *
 * @example
 * ```ts
 * import { readFileSync } from "node:fs"
 * import { Pricing } from "@sluice/core"
 *
 * // Your file's prices over the built-in table; a wrong entry fails the layer with InvalidPriceTable.
 * const pricingFrom = (path: string) => Pricing.layerLiteLlm(JSON.parse(readFileSync(path, "utf8")))
 * // const PricingLive = pricingFrom("model_prices_and_context_window.json")
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLiteLlm = (
  input: unknown,
  base: PriceTable = defaultTable
): Layer.Layer<Pricing, InvalidPriceTable> =>
  Layer.effect(Pricing, Effect.flatMap(mergeLiteLlm(input, base), (table) => make(table)))
