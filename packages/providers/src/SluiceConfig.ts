/**
 * The whole governed stack from one declarative file (`sluice.yaml` or JSON):
 * the provider, quotas by key, the limiter's classes and lane bounds, budgets
 * per window and scope, retry, the breaker, the fallback ladder and router
 * pools, with `SLUICE_*` environment variables overriding fields.
 *
 * A file is decoded with `Schema` and the options' own validators
 * (`Quota.Quota`, `Budget.Limit`, `Governor.validate`, `Router.validate`), and
 * refused with one {@link InvalidConfig} listing every mistake by its path:
 * `quotas."anthropic/claude-haiku-4-5".inputTokens.limit: Expected a positive
 * number, actual -5`. A field set by a variable is named with it
 * (`retry.maxAttempts (SLUICE_RETRY_MAX_ATTEMPTS)`). Secrets never live in the
 * file: a provider names the variable that holds its key (`apiKeyEnv`), read as
 * `Redacted` through `Config`.
 *
 * Quotas are found under either spelling of their key (`anthropic/<model>` or
 * the bare model, see `QuotaKeys`), and a call on a key with no quota is logged
 * once. Every field and variable, with its default: docs/configuration.md.
 *
 * @example
 * ```ts
 * import { NodeContext } from "@effect/platform-node"
 * import { Effect, Layer } from "effect"
 * import { LlmClient } from "@sluice/core"
 * import { SluiceConfig } from "@sluice/providers"
 *
 * // provider, limiter, estimator, breaker, budget and Governor (or Router), from the file
 * const GovernedLive = SluiceConfig.layerFromFile("sluice.yaml").pipe(Layer.provide(NodeContext.layer))
 * const answer = Effect.flatMap(LlmClient.LlmClient, (client) =>
 *   client.complete({ model: "claude-haiku-4-5", messages: [{ role: "user", content: "Say hi" }], maxOutputTokens: 64 })
 * ).pipe(Effect.provide(GovernedLive))
 * ```
 *
 * @since 0.1.0
 */
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as FileSystem from "@effect/platform/FileSystem"
import {
  Budget,
  CircuitBreaker,
  Governor,
  LlmClient,
  Pricing,
  Quota,
  QuotaKeys,
  RateLimiter,
  Router,
  TokenEstimator
} from "@sluice/core"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Yaml from "yaml"
import * as Anthropic from "./Anthropic.js"
import * as Issues from "./internal/issues.js"
import * as OpenAiCompatible from "./OpenAiCompatible.js"

// ---------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------

const exact = { exact: true } as const

/** A duration written `"30 seconds"` or as milliseconds, decoded to a finite, non-negative `Duration`. */
const DurationText: Schema.Schema<Duration.Duration, string | number> = Schema.transformOrFail(
  Schema.Union(Schema.String, Schema.Number),
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (input, _, ast) =>
      Option.match(Option.filter(Duration.decodeUnknown(input), (d) => Duration.isFinite(d)), {
        onNone: () =>
          ParseResult.fail(
            new ParseResult.Type(
              ast,
              input,
              `Expected a duration such as "30 seconds" or a number of milliseconds, actual ${JSON.stringify(input)}`
            )
          ),
        onSome: ParseResult.succeed
      }),
    encode: (duration) => ParseResult.succeed(Duration.toMillis(duration))
  }
)
const PositiveInt = Schema.Int.pipe(Schema.positive())
const NonNegativeInt = Schema.Int.pipe(Schema.nonNegative())
const Fraction = Schema.Number.pipe(Schema.between(0, 1))

/**
 * Where calls go: the Anthropic Messages API (or an endpoint speaking it), or
 * an OpenAI-compatible chat completions endpoint (vLLM, Ollama, a gateway).
 * The key is read from the variable `apiKeyEnv` names.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Provider = Schema.Union(
  Schema.Struct({
    type: Schema.Literal("anthropic"),
    baseURL: Schema.optionalWith(Schema.NonEmptyString, exact),
    apiKeyEnv: Schema.optionalWith(Schema.NonEmptyString, exact),
    timeout: Schema.optionalWith(DurationText, exact),
    name: Schema.optionalWith(Schema.NonEmptyString, exact)
  }),
  Schema.Struct({
    type: Schema.Literal("openai-compatible"),
    baseURL: Schema.NonEmptyString,
    apiKeyEnv: Schema.optionalWith(Schema.NonEmptyString, exact),
    auth: Schema.optionalWith(Schema.Literal("bearer", "api-key"), exact),
    timeout: Schema.optionalWith(DurationText, exact),
    name: Schema.optionalWith(Schema.NonEmptyString, exact)
  })
)

/**
 * A decoded provider section.
 *
 * @since 0.1.0
 * @category models
 */
export type Provider = typeof Provider.Type

/**
 * The limiter's options (`RateLimiter.Options` without its quotas).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Limiter = Schema.Struct({
  maxInFlight: Schema.optionalWith(PositiveInt, exact),
  discover: Schema.optionalWith(Schema.Boolean, exact),
  lanes: Schema.optionalWith(
    Schema.Struct({
      interactive: Schema.optionalWith(PositiveInt, exact),
      normal: Schema.optionalWith(PositiveInt, exact),
      batch: Schema.optionalWith(PositiveInt, exact)
    }),
    exact
  ),
  maxWaiting: Schema.optionalWith(PositiveInt, exact),
  headroom: Schema.optionalWith(Fraction, exact),
  transitMargin: Schema.optionalWith(DurationText, exact),
  recentWindow: Schema.optionalWith(DurationText, exact),
  promoteAfter: Schema.optionalWith(DurationText, exact),
  maxPause: Schema.optionalWith(DurationText, exact),
  idleAfter: Schema.optionalWith(DurationText, exact),
  metricKeys: Schema.optionalWith(NonNegativeInt, exact)
})

/**
 * The breaker (`CircuitBreaker.Options`), or `false` for none.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Breaker = Schema.Union(
  Schema.Literal(false),
  Schema.Struct({
    consecutiveFailures: Schema.optionalWith(Schema.Union(PositiveInt, Schema.Literal(false)), exact),
    failureRate: Schema.optionalWith(
      Schema.Union(
        Schema.Literal(false),
        Schema.Struct({
          threshold: Schema.optionalWith(Fraction, exact),
          minCalls: Schema.optionalWith(PositiveInt, exact),
          window: Schema.optionalWith(DurationText, exact)
        })
      ),
      exact
    ),
    openFor: Schema.optionalWith(DurationText, exact),
    halfOpenProbes: Schema.optionalWith(PositiveInt, exact)
  })
)

/** `global`, `{ tenant: id }` or `{ job: id }`, as `Budget.Scope`. */
const BudgetScope = Schema.Union(
  Schema.transform(Schema.Literal("global"), Schema.typeSchema(Budget.Scope), {
    strict: false,
    decode: () => ({ _tag: "global" as const }),
    encode: () => "global" as const
  }),
  Schema.transform(Schema.Struct({ tenant: Schema.NonEmptyString }), Schema.typeSchema(Budget.Scope), {
    strict: false,
    decode: ({ tenant }) => ({ _tag: "tenant" as const, id: tenant }),
    encode: (scope) => ({ tenant: "id" in scope ? scope.id : "" })
  }),
  Schema.transform(Schema.Struct({ job: Schema.NonEmptyString }), Schema.typeSchema(Budget.Scope), {
    strict: false,
    decode: ({ job }) => ({ _tag: "job" as const, id: job }),
    encode: (scope) => ({ job: "id" in scope ? scope.id : "" })
  })
)

/**
 * Spend limits (`Budget.Options`): each `{ scope, window, limitUsd, thresholds? }`,
 * the scope written `global`, `{ tenant: id }` or `{ job: id }`; and an optional
 * price table (per model and million tokens, `Pricing.PriceTable`) over the defaults.
 *
 * @since 0.1.0
 * @category schemas
 */
export const BudgetSection = Schema.Struct({
  limits: Schema.Array(Schema.Struct({ ...Budget.Limit.fields, scope: BudgetScope })),
  reservationTtl: Schema.optionalWith(DurationText, exact),
  prices: Schema.optionalWith(Pricing.PriceTable, exact)
})

/**
 * A router pool (`Router.Options`): deployments, each with its provider and quota.
 *
 * @since 0.1.0
 * @category schemas
 */
export const RouterSection = Schema.Struct({
  deployments: Schema.Array(Schema.Struct({
    name: Schema.NonEmptyString,
    provider: Provider,
    quota: Schema.optionalWith(Quota.Quota, exact),
    key: Schema.optionalWith(Schema.NonEmptyString, exact),
    weight: Schema.optionalWith(Schema.Number.pipe(Schema.finite(), Schema.positive()), exact),
    models: Schema.optionalWith(Schema.Array(Schema.NonEmptyString), exact)
  })),
  stickyWithin: Schema.optionalWith(DurationText, exact),
  maxStickyKeys: Schema.optionalWith(NonNegativeInt, exact)
})

/** A fallback rung: a model, or `{ model, key }`. */
const Rung = Schema.Union(
  Schema.NonEmptyString,
  Schema.Struct({ model: Schema.NonEmptyString, key: Schema.optionalWith(Schema.NonEmptyString, exact) })
)

/**
 * The file. `governor` and `retry` are checked by `Governor.validate`, the
 * Governor's own validator; every other section by its schema here.
 *
 * @since 0.1.0
 * @category schemas
 */
export const File = Schema.Struct({
  provider: Schema.optionalWith(Provider, exact),
  quotas: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Quota.Quota }), exact),
  limiter: Schema.optionalWith(Limiter, exact),
  governor: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.Unknown }), exact),
  retry: Schema.optionalWith(
    Schema.Union(Schema.Literal(false), Schema.Record({ key: Schema.String, value: Schema.Unknown })),
    exact
  ),
  breaker: Schema.optionalWith(Breaker, exact),
  fallback: Schema.optionalWith(Schema.Array(Rung), exact),
  budget: Schema.optionalWith(BudgetSection, exact),
  router: Schema.optionalWith(RouterSection, exact)
})

/**
 * A decoded file, ready for {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SluiceConfig {
  readonly provider: Provider | undefined
  /** Quotas by key or bare model, as the limiter takes them. */
  readonly quotas: { readonly [name: string]: Quota.QuotaInput }
  readonly limiter: Omit<RateLimiter.Options, "quotas">
  /** The Governor's options, `retry` and `fallback` included. */
  readonly governor: Governor.Options
  /** Absent: no breaker. */
  readonly breaker: CircuitBreaker.Options | undefined
  /** Absent: no budget. */
  readonly budget: (Budget.Options & { readonly prices?: Pricing.PriceTable | undefined }) | undefined
  /** Absent: one provider, governed. */
  readonly router: typeof RouterSection.Type | undefined
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * One mistake, by its path in the file (`quotas."anthropic/claude-haiku-4-5".inputTokens.limit`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Issue {
  readonly path: string
  readonly message: string
}

/**
 * A configuration that could not be accepted: every mistake, each naming its path.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidConfig extends Data.TaggedError("InvalidConfig")<{
  /** The file, when it came from one. */
  readonly source: string | undefined
  readonly issues: ReadonlyArray<Issue>
}> {
  override get message(): string {
    const where = this.source === undefined ? "" : ` in ${this.source}`
    return `Invalid Sluice configuration${where} (${this.issues.length} ${
      this.issues.length === 1 ? "mistake" : "mistakes"
    }):\n${this.issues.map((issue) => `  ${issue.path || "(root)"}: ${issue.message}`).join("\n")}`
  }
}

const identifier = /^[A-Za-z_$][\w$-]*$/

/** `["quotas", "anthropic/x", "inputTokens"]` → `quotas."anthropic/x".inputTokens`. */
const pathOf = (segments: ReadonlyArray<PropertyKey>): string =>
  segments.map((segment) =>
    typeof segment === "number" || identifier.test(String(segment)) ? String(segment) : JSON.stringify(String(segment))
  ).join(".")

// ---------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------

/**
 * A variable that overrides one field of the file.
 *
 * @since 0.1.0
 * @category models
 */
export interface Override {
  readonly variable: string
  readonly path: ReadonlyArray<string>
  readonly kind: "integer" | "number" | "boolean" | "text" | "list"
}

/**
 * Every `SLUICE_*` variable and the field it sets (docs/configuration.md has
 * them with their defaults). A variable wins over the file.
 *
 * @since 0.1.0
 * @category constants
 */
export const overrides: ReadonlyArray<Override> = [
  { variable: "SLUICE_PROVIDER", path: ["provider", "type"], kind: "text" },
  { variable: "SLUICE_BASE_URL", path: ["provider", "baseURL"], kind: "text" },
  { variable: "SLUICE_API_KEY_ENV", path: ["provider", "apiKeyEnv"], kind: "text" },
  { variable: "SLUICE_MAX_IN_FLIGHT", path: ["limiter", "maxInFlight"], kind: "integer" },
  { variable: "SLUICE_DISCOVER", path: ["limiter", "discover"], kind: "boolean" },
  { variable: "SLUICE_MAX_WAITING", path: ["limiter", "maxWaiting"], kind: "integer" },
  { variable: "SLUICE_HEADROOM", path: ["limiter", "headroom"], kind: "number" },
  { variable: "SLUICE_TRANSIT_MARGIN", path: ["limiter", "transitMargin"], kind: "text" },
  { variable: "SLUICE_MAX_PAUSE", path: ["limiter", "maxPause"], kind: "text" },
  { variable: "SLUICE_RETRY_MAX_ATTEMPTS", path: ["retry", "maxAttempts"], kind: "integer" },
  { variable: "SLUICE_RETRY_BASE", path: ["retry", "base"], kind: "text" },
  { variable: "SLUICE_RETRY_MAX_DELAY", path: ["retry", "maxDelay"], kind: "text" },
  { variable: "SLUICE_RETRY_MAX_ELAPSED", path: ["retry", "maxElapsed"], kind: "text" },
  { variable: "SLUICE_FALLBACK", path: ["fallback"], kind: "list" },
  { variable: "SLUICE_COALESCE", path: ["governor", "coalesce"], kind: "boolean" },
  { variable: "SLUICE_CACHE_TTL", path: ["governor", "cacheTtl"], kind: "text" },
  { variable: "SLUICE_COUNT", path: ["governor", "count"], kind: "text" },
  { variable: "SLUICE_PER_TENANT", path: ["governor", "perTenant"], kind: "boolean" },
  { variable: "SLUICE_PREDICT_CACHE_READS", path: ["governor", "predictCacheReads"], kind: "boolean" },
  { variable: "SLUICE_PROMPT_CACHE_TTL", path: ["governor", "promptCacheTtl"], kind: "text" },
  { variable: "SLUICE_PRIORITY", path: ["governor", "priority"], kind: "text" },
  { variable: "SLUICE_MAX_WAIT", path: ["governor", "maxWait"], kind: "text" },
  { variable: "SLUICE_BREAKER_OPEN_FOR", path: ["breaker", "openFor"], kind: "text" },
  { variable: "SLUICE_BREAKER_CONSECUTIVE_FAILURES", path: ["breaker", "consecutiveFailures"], kind: "integer" }
]

const numeric = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/

/** A variable's text as the file would hold it: a number or a boolean when it reads as one, else the text (the schema then names it). */
const coerce = (kind: Override["kind"], text: string): unknown => {
  const trimmed = text.trim()
  switch (kind) {
    case "integer":
    case "number":
      return numeric.test(trimmed) ? Number(trimmed) : trimmed
    case "boolean":
      return trimmed === "true" ? true : trimmed === "false" ? false : trimmed
    case "list":
      return trimmed.split(",").map((item) => item.trim()).filter((item) => item !== "")
    case "text":
      return trimmed
  }
}

/** `raw` with `value` at `path`, copying each object on the way (a `false` section becomes an object). */
const setAt = (raw: unknown, path: ReadonlyArray<string>, value: unknown): unknown => {
  if (path.length === 0) return value
  const [head, ...rest] = path
  const base: Record<string, unknown> = Predicate.isRecord(raw) ? { ...raw } : {}
  base[head!] = setAt(base[head!], rest, value)
  return base
}

/**
 * The variables set in the current `ConfigProvider` (the environment by
 * default) applied over `raw`, and which paths they set.
 *
 * @since 0.1.0
 * @category utilities
 */
export const applyOverrides = (
  raw: unknown
): Effect.Effect<{ readonly raw: unknown; readonly setBy: ReadonlyMap<string, string> }, ConfigError.ConfigError> =>
  Effect.gen(function*() {
    let result = raw
    const setBy = new Map<string, string>()
    for (const override of overrides) {
      const value = yield* Config.option(Config.string(override.variable))
      if (Option.isNone(value)) continue
      result = setAt(result, override.path, coerce(override.kind, value.value))
      setBy.set(pathOf(override.path), override.variable)
    }
    return { raw: result, setBy }
  })

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

const decodeFile = Schema.decodeUnknownEither(File, { errors: "all", onExcessProperty: "error" })

/** A placeholder client: `Router.validate` checks names, weights, quotas and rungs, never the client. */
const unusedClient: LlmClient.Provider = {
  provider: "unused",
  complete: () => Effect.dieMessage("not a client"),
  stream: () => Effect.dieMessage("not a client") as never
}

const toConfig = (file: typeof File.Type): SluiceConfig => {
  const { lanes, ...limiter } = file.limiter ?? {}
  const fallback = file.fallback?.map((rung) => typeof rung === "string" ? { model: rung } : rung)
  return {
    provider: file.provider,
    quotas: Object.fromEntries(
      Object.entries(file.quotas ?? {}).map(([name, quota]) => [name, Schema.encodeSync(Quota.Quota)(quota)])
    ),
    limiter: {
      ...limiter,
      ...(lanes === undefined ? {} : { lanes })
    },
    governor: {
      ...(file.governor as Governor.Options | undefined),
      ...(file.retry === undefined ? {} : { retry: file.retry as Retry }),
      ...(fallback === undefined ? {} : { fallback })
    },
    breaker: file.breaker === undefined || file.breaker === false ? undefined : file.breaker,
    budget: file.budget === undefined ? undefined : {
      limits: file.budget.limits.map((limit) => Schema.encodeSync(Budget.Limit)(limit)),
      ...(file.budget.reservationTtl === undefined ? {} : { reservationTtl: file.budget.reservationTtl }),
      ...(file.budget.prices === undefined ? {} : { prices: file.budget.prices })
    },
    router: file.router
  }
}
type Retry = Governor.Options["retry"]

/** What `Governor.validate` says of the file's `governor`, `retry` and `fallback`, read from the data as written. */
const governorIssues = (input: unknown): ReadonlyArray<Issue> => {
  if (!Predicate.isRecord(input)) return []
  const governor = Predicate.isRecord(input.governor) ? input.governor : {}
  const fallback = Array.isArray(input.fallback)
    ? input.fallback.map((rung: unknown) => typeof rung === "string" ? { model: rung } : rung)
    : undefined
  const options = {
    ...governor,
    ...(input.retry === undefined ? {} : { retry: input.retry }),
    ...(fallback === undefined ? {} : { fallback })
  } as Governor.Options
  // `Governor.validate` lets `key` through (a function, set in code): in a file it is a mistake.
  const keyIssue = "key" in governor
    ? [{ path: "governor.key", message: "The key function is set in code (Governor.Options.key), not in a file" }]
    : []
  return Either.match(Governor.validate(options), {
    onRight: () => keyIssue,
    onLeft: (error) =>
      error.issues.map((issue) => {
        const top = issue.path.split(".")[0]
        return {
          path: top === "retry" || top === "fallback" ? issue.path : `governor.${issue.path}`,
          message: issue.message
        }
      }).concat(keyIssue)
  })
}

/** What `Router.validate` says of a router section that passed the schema (names, rungs each served). */
const routerIssues = (file: typeof File.Type): ReadonlyArray<Issue> => {
  if (file.router === undefined) return []
  const fallback = file.fallback?.map((rung) => typeof rung === "string" ? { model: rung } : rung)
  return Either.match(
    Router.validate({
      deployments: file.router.deployments.map((deployment) => ({
        name: deployment.name,
        client: unusedClient,
        ...(deployment.models === undefined ? {} : { models: deployment.models })
      })),
      ...(fallback === undefined ? {} : { fallback })
    }),
    {
      onRight: () => [],
      onLeft: (error) =>
        error.issues.map((issue) => ({
          path: issue.path.startsWith("fallback") ? issue.path : `router.${issue.path}`,
          message: issue.message
        }))
    }
  )
}

/**
 * Decodes a parsed file (YAML or JSON data): every mistake at once, each named
 * by its path; `setBy` names the variable that set a path, for the message.
 *
 * @since 0.1.0
 * @category utilities
 */
export const decode = (
  input: unknown,
  options: { readonly source?: string | undefined; readonly setBy?: ReadonlyMap<string, string> | undefined } = {}
): Either.Either<SluiceConfig, InvalidConfig> => {
  const named = (issues: ReadonlyArray<Issue>) =>
    new InvalidConfig({
      source: options.source,
      issues: issues.map((issue) => {
        const variable = options.setBy?.get(issue.path)
        return variable === undefined ? issue : { path: `${issue.path} (${variable})`, message: issue.message }
      })
    })
  const governed = governorIssues(input)
  return Either.match(decodeFile(input ?? {}), {
    onLeft: (error) =>
      Either.left(named(Issues.deepest([
        ...ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
          path: pathOf(issue.path),
          message: issue.message
        })),
        ...governed
      ]))),
    onRight: (file) => {
      const issues = [...governed, ...routerIssues(file)]
      return issues.length === 0 ? Either.right(toConfig(file)) : Either.left(named(issues))
    }
  })
}

/**
 * Parses a file's text: YAML (which JSON is a subset of). A syntax error names its line.
 *
 * @since 0.1.0
 * @category utilities
 */
export const parse = (text: string, source?: string): Either.Either<unknown, InvalidConfig> => {
  const document = Yaml.parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (document.errors.length > 0) {
    return Either.left(
      new InvalidConfig({
        source,
        issues: document.errors.map((error) => ({
          path: error.linePos === undefined ? "" : `line ${error.linePos[0].line}`,
          message: error.message.split("\n")[0]!
        }))
      })
    )
  }
  return Either.right(document.toJS())
}

/**
 * Reads, parses and decodes a file, the `SLUICE_*` variables of the current
 * `ConfigProvider` applied over it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const load = (
  path: string
): Effect.Effect<SluiceConfig, InvalidConfig | ConfigError.ConfigError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((error) => new InvalidConfig({ source: path, issues: [{ path: "", message: error.message }] }))
    )
    const parsed = yield* parse(text, path)
    const { raw, setBy } = yield* applyOverrides(parsed)
    return yield* decode(raw, { source: path, setBy })
  }).pipe(Effect.withSpan("SluiceConfig.load", { attributes: { path } }))

/**
 * {@link decode} with the `SLUICE_*` variables applied over the data, for a
 * configuration held in code or fetched elsewhere.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromData = (input: unknown): Effect.Effect<SluiceConfig, InvalidConfig | ConfigError.ConfigError> =>
  Effect.flatMap(applyOverrides(input), ({ raw, setBy }) => decode(raw, { setBy }))

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/**
 * The `LlmClient` of a provider section, its key read from `apiKeyEnv`
 * (default `ANTHROPIC_API_KEY` or `OPENAI_API_KEY`; absent: no key, for local
 * servers that need none).
 *
 * @since 0.1.0
 * @category layers
 */
export const providerLayer = (provider: Provider): Layer.Layer<LlmClient.LlmClient, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(providerClient(provider), (client) => Layer.succeed(LlmClient.LlmClient, client)))

const keyOf = (provider: Provider) =>
  Effect.map(
    Config.option(
      Config.redacted(provider.apiKeyEnv ?? (provider.type === "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY"))
    ),
    Option.getOrElse(() => Redacted.make("sluice-no-key"))
  )

/** A provider's client, built in place (a router pool holds several). */
const providerClient = (provider: Provider): Effect.Effect<LlmClient.Provider, ConfigError.ConfigError> =>
  Effect.flatMap(keyOf(provider), (apiKey) => {
    const common = {
      apiKey,
      ...(provider.timeout === undefined ? {} : { timeout: provider.timeout }),
      ...(provider.name === undefined ? {} : { provider: provider.name })
    }
    return provider.type === "anthropic"
      // The base URL always given: the SDK would otherwise read ANTHROPIC_BASE_URL behind the file's back.
      ? Anthropic.make({ ...common, baseURL: provider.baseURL ?? "https://api.anthropic.com" })
      : OpenAiCompatible.make({
        ...common,
        baseURL: provider.baseURL,
        ...(provider.auth === undefined ? {} : { auth: provider.auth })
      }).pipe(Effect.provide(FetchHttpClient.layer))
  })

/**
 * The limiter of a configuration: its quotas under either spelling, keys with
 * no quota and responses without limit headers logged once (`QuotaKeys`), in memory.
 *
 * @since 0.1.0
 * @category layers
 */
export const limiterLayer = (config: SluiceConfig): Layer.Layer<RateLimiter.RateLimiter, Quota.InvalidQuota> =>
  QuotaKeys.layerMemory({ ...config.limiter, quotas: config.quotas })

/**
 * The services a Governor or a Router reads from context, from a
 * configuration: the limiter, the estimator, the breaker (when configured) and
 * the budget (when configured, on an in-memory ledger unless a `BudgetLedger`
 * is given).
 *
 * @since 0.1.0
 * @category layers
 */
export const servicesLayer = (
  config: SluiceConfig,
  options: { readonly ledger?: Layer.Layer<Budget.BudgetLedger> | undefined } = {}
): Layer.Layer<
  RateLimiter.RateLimiter | TokenEstimator.TokenEstimator,
  Quota.InvalidQuota | Budget.InvalidBudget | Pricing.InvalidPriceTable
> => {
  const breaker = config.breaker === undefined ? Layer.empty : CircuitBreaker.layer(config.breaker)
  const budget = config.budget === undefined ? Layer.empty : Budget.layer(config.budget).pipe(
    Layer.provide([
      Pricing.layer({ ...Pricing.defaultTable, ...config.budget.prices }),
      options.ledger ?? Budget.layerLedgerMemory
    ])
  )
  return Layer.mergeAll(limiterLayer(config), TokenEstimator.layer(), breaker, budget)
}

/**
 * The governed stack over the `LlmClient` in context (the raw provider): a
 * Governor with the configured retry, ladder and options over the services of
 * {@link servicesLayer}. The limiter stays in the output, for stats.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGoverned = (
  config: SluiceConfig,
  options: { readonly ledger?: Layer.Layer<Budget.BudgetLedger> | undefined } = {}
): Layer.Layer<
  LlmClient.LlmClient | RateLimiter.RateLimiter,
  Quota.InvalidQuota | Budget.InvalidBudget | Pricing.InvalidPriceTable | Governor.InvalidGovernorOptions,
  LlmClient.LlmClient
> => Governor.layer(config.governor).pipe(Layer.provideMerge(servicesLayer(config, options)))

const routerLayer = (config: SluiceConfig, router: typeof RouterSection.Type) =>
  Router.layerEffect(Effect.gen(function*() {
    const deployments: Array<Router.Deployment> = []
    for (const deployment of router.deployments) {
      deployments.push({
        name: deployment.name,
        client: yield* providerClient(deployment.provider),
        ...(deployment.quota === undefined ? {} : { quota: Schema.encodeSync(Quota.Quota)(deployment.quota) }),
        ...(deployment.key === undefined ? {} : { key: deployment.key }),
        ...(deployment.weight === undefined ? {} : { weight: deployment.weight }),
        ...(deployment.models === undefined ? {} : { models: deployment.models })
      })
    }
    const { fallback, retry, ...governor } = config.governor
    return {
      deployments,
      ...(fallback === undefined ? {} : { fallback }),
      ...(retry === undefined ? {} : { retry }),
      ...(governor.coalesce === undefined ? {} : { coalesce: governor.coalesce }),
      governor: {
        ...(governor.count === undefined ? {} : { count: governor.count }),
        ...(governor.cacheReadsCount === undefined ? {} : { cacheReadsCount: governor.cacheReadsCount }),
        ...(governor.priority === undefined ? {} : { priority: governor.priority }),
        ...(governor.pauseWithoutHint === undefined ? {} : { pauseWithoutHint: governor.pauseWithoutHint })
      },
      ...(router.stickyWithin === undefined ? {} : { stickyWithin: router.stickyWithin }),
      ...(router.maxStickyKeys === undefined ? {} : { maxStickyKeys: router.maxStickyKeys })
    } satisfies Router.Options
  }))

/**
 * Errors a configuration's stack can fail to build with.
 *
 * @since 0.1.0
 * @category models
 */
export type BuildError =
  | InvalidConfig
  | ConfigError.ConfigError
  | Quota.InvalidQuota
  | Budget.InvalidBudget
  | Pricing.InvalidPriceTable
  | Governor.InvalidGovernorOptions
  | Router.InvalidRouterOptions

/**
 * The whole governed stack of a configuration as one `LlmClient`: a Router
 * over its pool when it has a `router` section, else a Governor over its
 * `provider`; the limiter (for stats) beside it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: SluiceConfig,
  options: { readonly ledger?: Layer.Layer<Budget.BudgetLedger> | undefined } = {}
): Layer.Layer<LlmClient.LlmClient | RateLimiter.RateLimiter, BuildError> => {
  if (config.router !== undefined) {
    return routerLayer(config, config.router).pipe(Layer.provideMerge(servicesLayer(config, options)))
  }
  if (config.provider === undefined) {
    return Layer.fail(
      new InvalidConfig({
        source: undefined,
        issues: [{
          path: "provider",
          message:
            "Expected a provider (or a router) to build the stack; use layerGoverned over an LlmClient of your own"
        }]
      })
    )
  }
  return layerGoverned(config, options).pipe(Layer.provide(providerLayer(config.provider)))
}

/**
 * {@link layer} from a file ({@link load}): YAML or JSON, `SLUICE_*` variables over it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromFile = (
  path: string,
  options: { readonly ledger?: Layer.Layer<Budget.BudgetLedger> | undefined } = {}
): Layer.Layer<LlmClient.LlmClient | RateLimiter.RateLimiter, BuildError, FileSystem.FileSystem> =>
  Layer.unwrapEffect(Effect.map(load(path), (config) => layer(config, options)))
