/**
 * Rate-limit headers, from every provider's format to one `RateLimitSnapshot`.
 *
 * - Anthropic: `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`
 *   (resets are RFC 3339 instants) and `retry-after` in seconds.
 * - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets are Go
 *   durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`).
 * - Azure OpenAI: `x-ratelimit-remaining-{requests,tokens}`, `retry-after-ms`, `retry-after`.
 * - IETF (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` / `RateLimit`
 *   structured fields (`"default";q=100;w=60`, `"default";r=50;t=30`) and the
 *   older `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`.
 * - `retry-after` as seconds or as an HTTP date.
 *
 * Values are decoded with `Schema`. A garbage value is ignored with a warning
 * that names the header: a header never fails a call.
 *
 * @example
 * ```ts
 * import { RateLimitHeaders } from "@sluice/providers"
 *
 * const headers = { "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49" }
 * const snapshot = RateLimitHeaders.read(headers, "anthropic") // Effect<RateLimitSnapshot>
 * ```
 *
 * @since 0.1.0
 */
import type { Dimension } from "@sluice/core/Quota"
import type { DimensionState, RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/**
 * Headers as a `Headers` object or a plain record (names in any case, values possibly repeated).
 *
 * @since 0.1.0
 * @category models
 */
export type HeaderInput = Headers | { readonly [name: string]: string | ReadonlyArray<string> | undefined }

/**
 * A header whose value was ignored, and why.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeaderWarning {
  readonly header: string
  readonly value: string
  readonly reason: string
}

/**
 * A snapshot and the headers that were ignored on the way.
 *
 * @since 0.1.0
 * @category models
 */
export interface Parsed {
  readonly snapshot: RateLimitSnapshot
  readonly warnings: ReadonlyArray<HeaderWarning>
}

/**
 * Which header formats to read; `auto` reads every one present.
 *
 * @since 0.1.0
 * @category models
 */
export type Format = "anthropic" | "openai" | "azure" | "ietf" | "auto"

// ---------------------------------------------------------------------------
// Value schemas
// ---------------------------------------------------------------------------

/**
 * A non-negative integer such as `49` (leading/trailing spaces allowed).
 *
 * @since 0.1.0
 * @category utilities
 */
export const Count: Schema.Schema<number, string> = Schema.compose(
  Schema.Trim,
  Schema.NumberFromString.pipe(Schema.int(), Schema.nonNegative(), Schema.finite())
)

/**
 * A non-negative number of seconds such as `7` or `0.25`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Seconds: Schema.Schema<Duration.Duration, string> = Schema.transform(
  // At most a year: a larger value is garbage, and seconds × 1000 must stay finite.
  Schema.compose(
    Schema.Trim,
    Schema.NumberFromString.pipe(Schema.nonNegative(), Schema.finite(), Schema.lessThanOrEqualTo(31_536_000))
  ),
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (seconds) => Duration.millis(seconds * 1000),
    encode: (duration) => Duration.toMillis(duration) / 1000
  }
)

/**
 * A non-negative number of milliseconds such as `1500` (Azure's `retry-after-ms`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const Millis: Schema.Schema<Duration.Duration, string> = Schema.transform(
  Schema.compose(Schema.Trim, Schema.NumberFromString.pipe(Schema.nonNegative(), Schema.finite())),
  Schema.DurationFromSelf,
  { strict: true, decode: (millis) => Duration.millis(millis), encode: (duration) => Duration.toMillis(duration) }
)

const goUnits: Record<string, number> = {
  h: 3_600_000,
  m: 60_000,
  s: 1_000,
  ms: 1,
  us: 0.001,
  "µs": 0.001,
  "μs": 0.001,
  ns: 0.000001
}
const goDurationPattern = /^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|μs|ns))+$/

/**
 * A Go duration such as `1s`, `6m0s`, `20ms`, `1h2m3.5s` (OpenAI's resets).
 *
 * @since 0.1.0
 * @category utilities
 */
export const GoDuration: Schema.Schema<Duration.Duration, string> = Schema.transformOrFail(
  Schema.Trim,
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (text, _, ast) => {
      if (text === "0") return ParseResult.succeed(Duration.zero)
      if (!goDurationPattern.test(text)) {
        return ParseResult.fail(
          new ParseResult.Type(ast, text, "Expected a duration such as 1s, 6m0s, 20ms or 1h2m3.5s")
        )
      }
      let millis = 0
      for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|μs|ns)/g)) {
        millis += Number(amount) * goUnits[unit!]!
      }
      return Number.isFinite(millis)
        ? ParseResult.succeed(Duration.millis(millis))
        : ParseResult.fail(new ParseResult.Type(ast, text, "The duration is too large"))
    },
    encode: (duration) => ParseResult.succeed(`${Duration.toMillis(duration)}ms`)
  }
)

/**
 * Formats a duration the way Go (and OpenAI) do: `1h2m3.5s`, `6m0s`, `20ms`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const formatGoDuration = (duration: Duration.Duration): string => {
  const millis = Duration.toMillis(duration)
  if (millis === 0) return "0s"
  if (millis < 1000) return `${millis}ms`
  const hours = Math.floor(millis / 3_600_000)
  const minutes = Math.floor((millis % 3_600_000) / 60_000)
  const seconds = (millis % 60_000) / 1000
  return `${hours > 0 ? `${hours}h` : ""}${hours > 0 || minutes > 0 ? `${minutes}m` : ""}${seconds}s`
}

const rfc3339Pattern = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/

/**
 * An RFC 3339 instant such as `2026-11-22T14:03:07Z`, as epoch milliseconds (Anthropic's resets).
 *
 * @since 0.1.0
 * @category utilities
 */
export const Rfc3339: Schema.Schema<number, string> = Schema.transformOrFail(Schema.Trim, Schema.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const millis = rfc3339Pattern.test(text) ? new Date(text).getTime() : Number.NaN
    return Number.isFinite(millis)
      ? ParseResult.succeed(millis)
      : ParseResult.fail(new ParseResult.Type(ast, text, "Expected an RFC 3339 instant such as 2026-11-22T14:03:07Z"))
  },
  encode: (millis) => ParseResult.succeed(new Date(millis).toISOString())
})

const httpDatePattern = /^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/

/**
 * An HTTP date such as `Wed, 21 Oct 2026 07:28:00 GMT`, as epoch milliseconds.
 *
 * @since 0.1.0
 * @category utilities
 */
export const HttpDate: Schema.Schema<number, string> = Schema.transformOrFail(Schema.Trim, Schema.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const millis = httpDatePattern.test(text) ? new Date(text).getTime() : Number.NaN
    return Number.isFinite(millis)
      ? ParseResult.succeed(millis)
      : ParseResult.fail(new ParseResult.Type(ast, text, "Expected an HTTP date such as Wed, 21 Oct 2026 07:28:00 GMT"))
  },
  encode: (millis) => ParseResult.succeed(new Date(millis).toUTCString())
})

// ---------------------------------------------------------------------------
// Reading headers
// ---------------------------------------------------------------------------

/** Every value of a header, case-insensitively, split on commas for repeated headers where safe. */
const valuesOf = (headers: HeaderInput, name: string): ReadonlyArray<string> => {
  if (headers instanceof Headers) {
    const value = headers.get(name)
    return value === null ? [] : [value]
  }
  const found: Array<string> = []
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name) continue
    if (typeof value === "string") found.push(value)
    else if (Array.isArray(value)) {
      for (const item of value as ReadonlyArray<unknown>) if (typeof item === "string") found.push(item)
    }
  }
  return found
}

/** A collector of warnings, so every parser reports the header it ignored. */
class Reader {
  readonly warnings: Array<HeaderWarning> = []
  constructor(readonly headers: HeaderInput) {}

  has(name: string): boolean {
    return valuesOf(this.headers, name).length > 0
  }

  /** The first value of `name` that decodes; a warning for a present header with no valid value. */
  get<A>(name: string, schema: Schema.Schema<A, string>): A | undefined {
    const values = valuesOf(this.headers, name)
    if (values.length === 0) return undefined
    // Repeated headers may arrive joined by commas; HTTP dates contain a comma, so try whole first.
    const candidates = [...values, ...values.flatMap((value) => value.includes(",") ? value.split(",") : [])]
    let reason = ""
    for (const candidate of candidates) {
      const decoded = Schema.decodeUnknownEither(schema)(candidate)
      if (Either.isRight(decoded)) return decoded.right
      reason ||= ParseResult.TreeFormatter.formatErrorSync(decoded.left).split("\n").pop()?.trim() ?? "invalid"
    }
    this.warnings.push({ header: name, value: values.join(", "), reason })
    return undefined
  }
}

type MutableDimensions = { [D in Dimension]?: DimensionState }

const setState = (dimensions: MutableDimensions, dimension: Dimension, state: DimensionState) => {
  const clean: { limit?: number; remaining?: number; resetAfter?: Duration.Duration } = {}
  if (state.limit !== undefined) clean.limit = state.limit
  if (state.remaining !== undefined) clean.remaining = state.remaining
  if (state.resetAfter !== undefined) clean.resetAfter = state.resetAfter
  if (Object.keys(clean).length > 0) dimensions[dimension] = { ...dimensions[dimension], ...clean }
}

const untilInstant = (instant: number | undefined, now: number): Duration.Duration | undefined =>
  instant === undefined ? undefined : Duration.millis(Math.max(0, instant - now))

/** The snapshot, stamped with the instant its headers were read (`now`): the store discounts what it granted since. */
const snapshotOf = (
  dimensions: MutableDimensions,
  retry: Duration.Duration | undefined,
  now: number
): RateLimitSnapshot =>
  retry === undefined ? { dimensions, observedAt: now } : { dimensions, retryAfter: retry, observedAt: now }

const readRetryAfter = (reader: Reader, now: number): Duration.Duration | undefined => {
  const millis = reader.get("retry-after-ms", Millis)
  if (millis !== undefined) return millis
  if (!reader.has("retry-after")) return undefined
  // retry-after is seconds or an HTTP date; only warn when it is neither.
  const values = valuesOf(reader.headers, "retry-after")
  for (const value of values) {
    const seconds = Schema.decodeUnknownOption(Seconds)(value)
    if (Option.isSome(seconds)) return seconds.value
    const date = Schema.decodeUnknownOption(HttpDate)(value)
    if (Option.isSome(date)) return untilInstant(date.value, now)
  }
  reader.warnings.push({ header: "retry-after", value: values.join(", "), reason: "Expected seconds or an HTTP date" })
  return undefined
}

const anthropicDimensions: ReadonlyArray<readonly [string, Dimension]> = [
  ["requests", "requests"],
  ["input-tokens", "inputTokens"],
  ["output-tokens", "outputTokens"]
]

const readAnthropic = (reader: Reader, now: number, dimensions: MutableDimensions) => {
  const read = (name: string): DimensionState => ({
    limit: reader.get(`anthropic-ratelimit-${name}-limit`, Count),
    remaining: reader.get(`anthropic-ratelimit-${name}-remaining`, Count),
    resetAfter: untilInstant(reader.get(`anthropic-ratelimit-${name}-reset`, Rfc3339), now)
  })
  for (const [name, dimension] of anthropicDimensions) setState(dimensions, dimension, read(name))
  // "tokens" is the most restrictive of input and output: only useful when those are absent.
  const split = ["input-tokens", "output-tokens"].some((name) =>
    ["limit", "remaining", "reset"].some((part) => reader.has(`anthropic-ratelimit-${name}-${part}`))
  )
  if (!split) setState(dimensions, "tokens", read("tokens"))
}

const readOpenAi = (reader: Reader, dimensions: MutableDimensions) => {
  for (const [name, dimension] of [["requests", "requests"], ["tokens", "tokens"]] as const) {
    setState(dimensions, dimension, {
      limit: reader.get(`x-ratelimit-limit-${name}`, Count),
      remaining: reader.get(`x-ratelimit-remaining-${name}`, Count),
      resetAfter: reader.get(`x-ratelimit-reset-${name}`, GoDuration)
    })
  }
}

/** One item of a structured-field list: `"name";q=100;w=60` or `100;w=60`. */
interface SfItem {
  readonly name: string | undefined
  readonly value: number | undefined
  readonly params: Record<string, string>
}

const parseSfList = (text: string): ReadonlyArray<SfItem> =>
  text.split(",").map((raw) => {
    const [head = "", ...rest] = raw.split(";").map((part) => part.trim())
    const params: Record<string, string> = {}
    for (const part of rest) {
      const [key, value] = part.split("=")
      if (key !== undefined && value !== undefined) {
        params[key.trim().toLowerCase()] = value.trim().replace(/^"|"$/g, "")
      }
    }
    const quoted = /^"(.*)"$/.exec(head)
    const numeric = Number(head)
    return {
      name: quoted ? quoted[1] : /^[A-Za-z*][A-Za-z0-9_.:*/-]*$/.test(head) ? head : undefined,
      value: head !== "" && Number.isFinite(numeric) ? numeric : undefined,
      params
    }
  }).filter((item) => item.name !== undefined || item.value !== undefined)

const ietfDimension = (item: SfItem | undefined): Dimension =>
  item !== undefined && (/token/i.test(item.name ?? "") || /token/i.test(item.params.pu ?? "")) ? "tokens" : "requests"

const nonNegative = (value: string | number | undefined): number | undefined => {
  const number = typeof value === "number" ? value : value === undefined ? Number.NaN : Number(value)
  return Number.isFinite(number) && number >= 0 ? number : undefined
}

const readIetf = (reader: Reader, dimensions: MutableDimensions) => {
  const policies = valuesOf(reader.headers, "ratelimit-policy").flatMap(parseSfList)
  const states = valuesOf(reader.headers, "ratelimit")
  for (const text of states) {
    const items = parseSfList(text)
    if (
      items.length === 0 || items.every((item) => item.params.r === undefined && item.params.remaining === undefined)
    ) {
      reader.warnings.push({ header: "ratelimit", value: text, reason: "Expected items such as \"default\";r=50;t=30" })
      continue
    }
    for (const item of items) {
      const policy = policies.find((candidate) => candidate.name !== undefined && candidate.name === item.name) ??
        policies[0]
      const seconds = nonNegative(item.params.t ?? item.params.reset)
      const reset = seconds === undefined || seconds > 31_536_000 ? undefined : seconds
      setState(dimensions, ietfDimension(policy ?? item), {
        limit: nonNegative(policy?.params.q ?? policy?.value),
        remaining: nonNegative(item.params.r ?? item.params.remaining),
        resetAfter: reset === undefined ? undefined : Duration.millis(reset * 1000)
      })
    }
  }
  if (states.length === 0) {
    // The older draft: three separate fields.
    const limit = reader.get(
      "ratelimit-limit",
      Schema.compose(Schema.Trim, Schema.NumberFromString.pipe(Schema.nonNegative(), Schema.finite()))
    )
    const remaining = reader.get("ratelimit-remaining", Count)
    const reset = reader.get("ratelimit-reset", Seconds)
    const policy = policies[0]
    setState(dimensions, ietfDimension(policy), {
      limit: limit ?? nonNegative(policy?.params.q ?? policy?.value),
      remaining,
      resetAfter: reset
    })
  }
}

/**
 * Anthropic's headers (and `retry-after`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const parseAnthropic = (headers: HeaderInput, now: number): Parsed => {
  const reader = new Reader(headers)
  const dimensions: MutableDimensions = {}
  readAnthropic(reader, now, dimensions)
  return { snapshot: snapshotOf(dimensions, readRetryAfter(reader, now), now), warnings: reader.warnings }
}

/**
 * OpenAI's headers (and `retry-after`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const parseOpenAi = (headers: HeaderInput, now: number): Parsed => {
  const reader = new Reader(headers)
  const dimensions: MutableDimensions = {}
  readOpenAi(reader, dimensions)
  return { snapshot: snapshotOf(dimensions, readRetryAfter(reader, now), now), warnings: reader.warnings }
}

/**
 * Azure OpenAI's headers: remaining counts and `retry-after-ms` / `retry-after`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const parseAzure = parseOpenAi

/**
 * The IETF `RateLimit` / `RateLimit-Policy` fields (both drafts) and `retry-after`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const parseIetf = (headers: HeaderInput, now: number): Parsed => {
  const reader = new Reader(headers)
  const dimensions: MutableDimensions = {}
  readIetf(reader, dimensions)
  return { snapshot: snapshotOf(dimensions, readRetryAfter(reader, now), now), warnings: reader.warnings }
}

/**
 * Reads the given format, or (`auto`, the default) every format present,
 * merged: provider-specific headers win over the IETF fields.
 *
 * @since 0.1.0
 * @category utilities
 */
export const parse = (headers: HeaderInput, now: number, format: Format = "auto"): Parsed => {
  switch (format) {
    case "anthropic":
      return parseAnthropic(headers, now)
    case "openai":
    case "azure":
      return parseOpenAi(headers, now)
    case "ietf":
      return parseIetf(headers, now)
    case "auto": {
      const reader = new Reader(headers)
      const dimensions: MutableDimensions = {}
      readIetf(reader, dimensions)
      readOpenAi(reader, dimensions)
      readAnthropic(reader, now, dimensions)
      return { snapshot: snapshotOf(dimensions, readRetryAfter(reader, now), now), warnings: reader.warnings }
    }
  }
}

/**
 * `retry-after-ms`, then `retry-after` as seconds or an HTTP date; none when absent or garbage.
 *
 * @since 0.1.0
 * @category utilities
 */
export const retryAfter = (headers: HeaderInput, now: number): Option.Option<Duration.Duration> =>
  Option.fromNullable(readRetryAfter(new Reader(headers), now))

/**
 * Parses with `now` from the Effect `Clock` and logs each ignored header. Never
 * fails. The snapshot's `observedAt` is that `now`: read the headers when the
 * response starts (a stream's first bytes), not when it ends.
 *
 * @since 0.1.0
 * @category utilities
 */
export const read = (headers: HeaderInput, format: Format = "auto"): Effect.Effect<RateLimitSnapshot> =>
  Effect.gen(function*() {
    const { snapshot, warnings } = parse(headers, yield* Clock.currentTimeMillis, format)
    for (const warning of warnings) {
      yield* Effect.logWarning(
        `Ignored rate-limit header ${warning.header}: ${JSON.stringify(warning.value)} (${warning.reason})`
      )
    }
    return snapshot
  })

const exhaustionOrder: ReadonlyArray<Dimension> = ["inputTokens", "outputTokens", "tokens", "requests"]

/**
 * The dimension a snapshot says ran out (remaining 0), tokens before requests; undefined when none did.
 *
 * @since 0.1.0
 * @category utilities
 */
export const exhaustedDimension = (snapshot: RateLimitSnapshot): Dimension | undefined =>
  exhaustionOrder.find((dimension) => {
    const remaining = snapshot.dimensions[dimension]?.remaining
    return remaining !== undefined && remaining <= 0
  })
