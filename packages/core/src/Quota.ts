/**
 * Quotas: what a provider allows per key, in every dimension at once.
 *
 * A key names one quota — provider + model or deployment + tenant — and a quota
 * holds one limit per dimension ("N per period", with an optional burst
 * capacity). Quotas are data validated by `Schema`: a zero or negative limit, an
 * unknown dimension or a missing period is refused with an {@link InvalidQuota}
 * that names the field.
 *
 * @example
 * ```ts
 * import { Quota } from "@sluice/core"
 *
 * const sonnet = Quota.decodeSync({
 *   requests: { limit: 4_000, per: "1 minute" },
 *   inputTokens: { limit: 2_000_000, per: "1 minute" },
 *   outputTokens: { limit: 400_000, per: "1 minute" }
 * })
 * const key = Quota.key({ provider: "anthropic", model: "claude-sonnet-4-5" })
 * ```
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/**
 * The dimensions a provider limits. `tokens` is input + output together (OpenAI's TPM).
 *
 * @since 0.1.0
 * @category utilities
 */
export const dimensions = ["requests", "inputTokens", "outputTokens", "tokens"] as const

/**
 * One limited dimension.
 *
 * @since 0.1.0
 * @category models
 */
export type Dimension = (typeof dimensions)[number]

/**
 * A period such as `"1 minute"`, `"60 seconds"` or a number of milliseconds,
 * decoded to a finite, positive `Duration`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Period: Schema.Schema<Duration.Duration, string | number> = Schema.transformOrFail(
  Schema.Union(Schema.String, Schema.Number),
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (input, _, ast) =>
      Option.match(Duration.decodeUnknown(input), {
        onNone: () =>
          ParseResult.fail(
            new ParseResult.Type(
              ast,
              input,
              `Expected a period such as "1 minute" or a number of milliseconds, actual ${JSON.stringify(input)}`
            )
          ),
        onSome: (duration) =>
          Duration.isFinite(duration) && Duration.toMillis(duration) > 0
            ? ParseResult.succeed(duration)
            : ParseResult.fail(
              new ParseResult.Type(ast, input, `Expected a finite, positive period, actual ${JSON.stringify(input)}`)
            )
      }),
    encode: (duration) => ParseResult.succeed(Duration.toMillis(duration))
  }
)

const PositiveAmount = Schema.Number.pipe(Schema.finite(), Schema.positive())

/**
 * One dimension's limit: `limit` units per `per`, refilled continuously, with a
 * bucket of `burst` units (the limit itself when absent).
 *
 * @since 0.1.0
 * @category utilities
 */
export const Limit = Schema.Struct({
  limit: PositiveAmount,
  per: Period,
  burst: Schema.optionalWith(PositiveAmount, { exact: true })
})

/**
 * A decoded limit.
 *
 * @since 0.1.0
 * @category models
 */
export type Limit = typeof Limit.Type

/**
 * What a user writes for a limit: `{ limit: 50, per: "1 minute" }`.
 *
 * @since 0.1.0
 * @category models
 */
export type LimitInput = typeof Limit.Encoded

/**
 * A quota: one optional limit per dimension, at least one of them.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Quota = Schema.Struct({
  requests: Schema.optionalWith(Limit, { exact: true }),
  inputTokens: Schema.optionalWith(Limit, { exact: true }),
  outputTokens: Schema.optionalWith(Limit, { exact: true }),
  tokens: Schema.optionalWith(Limit, { exact: true })
}).pipe(
  Schema.filter((quota) =>
    dimensions.some((dimension) => quota[dimension] !== undefined) ||
    "A quota needs at least one of requests, inputTokens, outputTokens, tokens"
  )
)

/**
 * A decoded quota.
 *
 * @since 0.1.0
 * @category models
 */
export type Quota = typeof Quota.Type

/**
 * What a user writes for a quota.
 *
 * @since 0.1.0
 * @category models
 */
export type QuotaInput = typeof Quota.Encoded

/**
 * One problem in a quota, located by its path (`inputTokens.per`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Issue {
  readonly path: string
  readonly message: string
}

/**
 * A quota that could not be accepted; `issues` name each field that was wrong.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidQuota extends Data.TaggedError("InvalidQuota")<{
  readonly key: string | undefined
  readonly issues: ReadonlyArray<Issue>
}> {
  override get message(): string {
    const where = this.key === undefined ? "quota" : `quota for key "${this.key}"`
    return `Invalid ${where}: ${this.issues.map((issue) => `${issue.path || "(root)"}: ${issue.message}`).join("; ")}`
  }
}

const decodeQuota = Schema.decodeUnknownEither(Quota, { onExcessProperty: "error", errors: "all" })

const toInvalidQuota = (key: string | undefined) => (error: ParseResult.ParseError) =>
  new InvalidQuota({
    key,
    issues: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
      path: issue.path.map(String).join("."),
      message: issue.message
    }))
  })

/**
 * Validates a quota; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeEither = (input: unknown, key?: string): Either.Either<Quota, InvalidQuota> =>
  Either.mapLeft(decodeQuota(input), toInvalidQuota(key))

/**
 * Validates a quota in an effect; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const decode = (input: unknown, key?: string): Effect.Effect<Quota, InvalidQuota> => decodeEither(input, key)

/**
 * Validates a quota and throws its {@link InvalidQuota} when wrong: for constants at module level.
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeSync = (input: unknown, key?: string): Quota => Either.getOrThrow(decodeEither(input, key))

/**
 * The dimensions a quota limits.
 *
 * @since 0.1.0
 * @category utilities
 */
export const limitedDimensions = (quota: Quota): ReadonlyArray<Dimension> =>
  dimensions.filter((dimension) => quota[dimension] !== undefined)

/**
 * The bucket capacity of a limit: its burst, or the limit itself.
 *
 * @since 0.1.0
 * @category utilities
 */
export const capacity = (limit: Limit): number => limit.burst ?? limit.limit

/**
 * Units refilled per millisecond.
 *
 * @since 0.1.0
 * @category utilities
 */
export const ratePerMilli = (limit: Limit): number => limit.limit / Duration.toMillis(limit.per)

/**
 * The key of a quota: `provider/model`, with `/tenant` when a tenant has its own
 * quota. Use the deployment name in place of the model for Azure.
 *
 * @since 0.1.0
 * @category utilities
 */
export const key = (
  parts: { readonly provider: string; readonly model: string; readonly tenant?: string | undefined }
): string =>
  parts.tenant === undefined ? `${parts.provider}/${parts.model}` : `${parts.provider}/${parts.model}/${parts.tenant}`

// ---------------------------------------------------------------------------
// Prompt caching: which parts of the input count against input-token limits
// ---------------------------------------------------------------------------

/**
 * Which parts of a call's input count against the input-token limits of its
 * quota (`inputTokens`, and `tokens` through it). Uncached input always counts;
 * cache reads and cache writes count when these say so.
 *
 * - Anthropic's current models: reads do not count against ITPM, writes do.
 * - OpenAI: cached tokens count against TPM (there are no separate writes).
 *
 * @since 0.1.0
 * @category utilities
 */
export const CacheCounting = Schema.Struct({
  /** Tokens read from the prompt cache count against the input-token limits. */
  cacheReadsCount: Schema.Boolean,
  /** Tokens written to the prompt cache count against the input-token limits. */
  cacheWritesCount: Schema.Boolean
})

/**
 * A decoded cache-counting rule.
 *
 * @since 0.1.0
 * @category models
 */
export type CacheCounting = typeof CacheCounting.Type

/**
 * Cache-counting rules by `provider`, `provider/model` or a prefix of either
 * (`"anthropic/claude-3"`), and `"*"` for any other provider. See
 * {@link cacheCountingFor} for how a call finds its rule.
 *
 * @example
 * ```ts
 * import { Quota } from "@sluice/core"
 *
 * const rules: Quota.CacheCountingTable = {
 *   ...Quota.defaultCacheCounting,
 *   "my-gateway": { cacheReadsCount: true, cacheWritesCount: true }
 * }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const CacheCountingTable = Schema.Record({ key: Schema.String, value: CacheCounting })

/**
 * A decoded cache-counting table.
 *
 * @since 0.1.0
 * @category models
 */
export type CacheCountingTable = typeof CacheCountingTable.Type

/**
 * Everything counts: the rule of a provider the table does not know, and of `LlmClient.usageCost` by default.
 *
 * @since 0.1.0
 * @category utilities
 */
export const countAll: CacheCounting = { cacheReadsCount: true, cacheWritesCount: true }

/**
 * The rules as the providers published them when this was written (check them
 * before you rely on them): Anthropic's current models do not count cache reads
 * against ITPM, its Claude 3.x models did; OpenAI counts cached tokens against
 * TPM; the simulator follows Anthropic's current rule; any other provider
 * counts everything, which can only over-reserve.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultCacheCounting: CacheCountingTable = {
  "anthropic": { cacheReadsCount: false, cacheWritesCount: true },
  "anthropic/claude-3": { cacheReadsCount: true, cacheWritesCount: true },
  "simulator": { cacheReadsCount: false, cacheWritesCount: true },
  "openai": { cacheReadsCount: true, cacheWritesCount: true },
  "*": countAll
}

/**
 * Validates a cache-counting table; the error names every wrong field (`anthropic.cacheReadsCount`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeCacheCounting = (input: unknown): Either.Either<CacheCountingTable, InvalidQuota> =>
  Either.mapLeft(
    Schema.decodeUnknownEither(CacheCountingTable, { onExcessProperty: "error", errors: "all" })(input),
    toInvalidQuota(undefined)
  )

/**
 * The rule of a call to `model` through `provider`: the entry for
 * `provider/model` itself, else the longest entry that is a prefix of it ending
 * at a `/` or `-` (`anthropic` covers `anthropic/claude-sonnet-4-5` and the
 * provider `anthropic-eu`; `anthropic/claude-3` covers `anthropic/claude-3-5-haiku`),
 * else `"*"`, else {@link countAll}.
 *
 * @example
 * ```ts
 * import { Quota } from "@sluice/core"
 *
 * Quota.cacheCountingFor(Quota.defaultCacheCounting, "anthropic", "claude-sonnet-4-5")
 * // { cacheReadsCount: false, cacheWritesCount: true }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const cacheCountingFor = (table: CacheCountingTable, provider: string, model: string): CacheCounting => {
  const name = `${provider}/${model}`
  const exact = table[name]
  if (exact !== undefined) return exact
  let best: string | undefined
  for (const candidate of Object.keys(table)) {
    if (
      (name.startsWith(`${candidate}/`) || name.startsWith(`${candidate}-`)) &&
      (best === undefined || candidate.length > best.length)
    ) best = candidate
  }
  return best !== undefined ? table[best]! : table["*"] ?? countAll
}
