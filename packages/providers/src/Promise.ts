/**
 * Sluice for code that does not use Effect: {@link createClient} returns an
 * object shaped like the Anthropic SDK's client — `messages.create(params)`
 * and `messages.countTokens(params)` take and return the Messages API shapes
 * of `@anthropic-ai/sdk` — whose calls pass a Governor built from plain
 * options: quotas per model, budget, retry, concurrency, fallback models.
 *
 * - `messages.create` sends the caller's params to the SDK as they are (every
 *   field, block and tool the SDK accepts) and resolves to the SDK's `Message`
 *   as the API returned it; Sluice reads the same params to estimate the call,
 *   waits for capacity, settles with the usage, and retries 429/529/5xx.
 * - Options are validated when the client is created; a bad one throws
 *   {@link InvalidOptionsError} naming it (`quotas.claude-haiku-4-5.requests.limit`).
 * - Streaming is governed the same way, through the Governor's `stream`:
 *   `messages.stream(params)` returns the SDK's own `MessageStream` (events,
 *   `on("text")`, `finalMessage()`), `messages.create({ ...params, stream:
 *   true })` an async iterable of the SDK's `RawMessageStreamEvent`s. The
 *   budget's worst case and the limiter's permit are taken before the request
 *   is sent, settled to the usage of the final events, refunded when the
 *   provider refuses, and released exactly once when the consumer breaks out
 *   of its loop or aborts (the worst case is then charged: the provider may
 *   have run it).
 * - Budget limits and call options are plain JavaScript: a limit's `scope` is
 *   `"global"`, `{ tenant: "acme" }` or `{ job: "nightly" }`; `tenant`, `job`
 *   and `priority` are given on the client (its defaults) or per call.
 * - Every failure is an ordinary `Error` subclass of {@link SluiceError}, whose
 *   `reason` is Sluice's typed error (`RateLimited`, `BudgetExceeded`, `Shed`,
 *   `BadRequest`, …) and `_tag` its tag; `RateLimitedError`,
 *   `BudgetExceededError`, … for `instanceof`.
 * - Inside, one `ManagedRuntime` holds the limiter, the estimator, the budget
 *   and the SDK; `close()` releases it, and calls after it reject.
 *
 * @example
 * ```ts
 * import { createClient } from "@sluice/providers/Promise"
 *
 * const main = async () => {
 *   const anthropic = createClient({
 *     apiKey: process.env.ANTHROPIC_API_KEY ?? "",
 *     quotas: {
 *       "claude-haiku-4-5": {
 *         requests: { limit: 50, per: "1 minute" },
 *         inputTokens: { limit: 50_000, per: "1 minute" },
 *         outputTokens: { limit: 10_000, per: "1 minute" }
 *       }
 *     },
 *     budget: { limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 20 }] }
 *   })
 *   const message = await anthropic.messages.create({
 *     model: "claude-haiku-4-5",
 *     max_tokens: 256,
 *     messages: [{ role: "user", content: "Hi" }]
 *   })
 *   await anthropic.close()
 *   return message
 * }
 * ```
 *
 * @since 0.1.0
 */
import { MessageStream, type MessageStreamEvents } from "@anthropic-ai/sdk/lib/MessageStream"
import type * as Sdk from "@anthropic-ai/sdk/resources/messages/messages"
import { Budget, Governor, LlmClient, Pricing, Quota, QuotaKeys, RateLimiter, TokenEstimator } from "@sluice/core"
import type { Priority, Retry } from "@sluice/core"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Anthropic from "./Anthropic.js"
import * as Facade from "./internal/facade.js"
import * as Issues from "./internal/issues.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * Plain options of a governed client. Only `apiKey` is required.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /** The Anthropic API key. Kept `Redacted` inside; never logged. */
  readonly apiKey: string
  /** Another endpoint that speaks the Messages API (the simulator, a proxy). */
  readonly baseURL?: string | undefined
  /** The longest one HTTP call may take, in milliseconds or as a duration ("2 minutes"). Default the SDK's 10 minutes. */
  readonly timeout?: number | string | undefined
  /**
   * Quotas per model, as the provider states them: `{ requests, inputTokens,
   * outputTokens, tokens }`, each `{ limit, per, burst? }`, by the bare model
   * name or as the Effect API keys it (`anthropic/claude-haiku-4-5`). A model
   * without one runs one call at a time until the first response's headers tell
   * its limits, and is logged once.
   */
  readonly quotas?: { readonly [model: string]: Quota.QuotaInput } | undefined
  /** Calls in flight per model, at most. Default 256. */
  readonly maxConcurrency?: number | undefined
  /**
   * Spend limits (`limits`) and optionally a price table (`prices`, per model
   * and million tokens). A limit's `scope` is `"global"` (the default),
   * `{ tenant: "acme" }` or `{ job: "nightly" }`. Default none.
   */
  readonly budget?: {
    readonly limits: ReadonlyArray<LimitInput>
    readonly prices?: { readonly [model: string]: Pricing.ModelPrice } | undefined
  } | undefined
  /** The tenant of a call that names none: its budget and, with per-tenant quotas, its key. */
  readonly tenant?: string | undefined
  /** The job of a call that names none, for per-job budgets. */
  readonly job?: string | undefined
  /** The retry policy, or false for none. Default `Retry.defaults` (6 attempts, full jitter, `retry-after` honoured). */
  readonly retry?: Retry.Options | false | undefined
  /** Models to fall back to, in order, when the asked one is rate limited or overloaded. Default none. */
  readonly fallback?: ReadonlyArray<string> | undefined
  /** The class of a call that names none. Default "normal". */
  readonly priority?: Priority.Class | undefined
  /** Reserve a learned typical output instead of `max_tokens` once enough calls were seen. Default false. */
  readonly learnOutput?: boolean | undefined
}

/**
 * What one call may say besides its params (the SDK's request options, plus Sluice's).
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /** Aborts the call (and its wait for capacity). */
  readonly signal?: AbortSignal | undefined
  /** The class the call waits in. */
  readonly priority?: Priority.Class | undefined
  /** The tenant whose budget the call counts against. */
  readonly tenant?: string | undefined
  /** The job whose budget the call counts against. */
  readonly job?: string | undefined
}

/**
 * Who a budget limit applies to, in plain JavaScript: `"global"`, `{ tenant: "acme" }`
 * or `{ job: "nightly" }` (the Effect API's tagged scopes are taken too).
 *
 * @since 0.1.0
 * @category models
 */
export type LimitScope = "global" | { readonly tenant: string } | { readonly job: string } | Budget.Scope

/**
 * A budget limit: at most `limitUsd` per `window` (`"day"`, `"month"` or
 * `{ rolling: "24 hours" }`) in a `scope` (default `"global"`).
 *
 * @example
 * ```ts
 * import type { LimitInput } from "@sluice/providers/Promise"
 *
 * const limits: Array<LimitInput> = [
 *   { window: "day", limitUsd: 50 },
 *   { scope: { tenant: "acme" }, window: "month", limitUsd: 200, thresholds: [0.8] }
 * ]
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface LimitInput extends Omit<Budget.LimitInput, "scope"> {
  readonly scope?: LimitScope | undefined
}

/**
 * Options that could not be accepted; each issue names its option (`quotas.claude-haiku-4-5.requests.limit`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidClientOptions extends Data.TaggedError("InvalidClientOptions")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid Sluice client options: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

/**
 * The client was closed; it makes no more calls.
 *
 * @since 0.1.0
 * @category errors
 */
export class ClientClosed extends Data.TaggedError("ClientClosed")<{}> {
  override get message(): string {
    return "The Sluice client was closed"
  }
}

/**
 * The request could not be read as Messages API params.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRequest extends Data.TaggedError("InvalidRequest")<{ readonly detail: string }> {
  override get message(): string {
    return `Invalid request: ${this.detail}`
  }
}

const exact = { exact: true } as const
const DurationInput = Schema.Union(Schema.String, Schema.Number).pipe(
  Schema.filter((input) =>
    Option.isSome(Duration.decodeUnknown(input)) ||
    `Expected milliseconds or a duration such as "2 minutes", got ${JSON.stringify(input)}`
  )
)

const PlainScope = Schema.Union(
  Schema.Literal("global"),
  Schema.Struct({ tenant: Schema.NonEmptyString }),
  Schema.Struct({ job: Schema.NonEmptyString }),
  Budget.Scope
)

const PlainLimit = Schema.Struct({ ...Budget.Limit.fields, scope: Schema.optionalWith(PlainScope, exact) })

/**
 * A plain limit as the Budget takes it: `{ tenant: "acme" }` becomes `{ _tag: "tenant", id: "acme" }`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toBudgetLimit = (limit: LimitInput): Budget.LimitInput => {
  const scope = limit.scope ?? "global"
  return {
    ...limit,
    scope: scope === "global"
      ? { _tag: "global" }
      : "_tag" in scope
      ? scope
      : "tenant" in scope
      ? { _tag: "tenant", id: scope.tenant }
      : { _tag: "job", id: scope.job }
  }
}

/** The options Governor does not validate itself. */
const ClientSchema = Schema.Struct({
  apiKey: Schema.NonEmptyString.annotations({ message: () => "Expected the API key, a non-empty string" }),
  baseURL: Schema.optionalWith(
    Schema.String.pipe(Schema.filter((url) => URL.canParse(url) || `Expected a URL, got ${JSON.stringify(url)}`)),
    exact
  ),
  timeout: Schema.optionalWith(DurationInput, exact),
  quotas: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.encodedSchema(Quota.Quota) }), exact),
  maxConcurrency: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), exact),
  budget: Schema.optionalWith(
    Schema.Struct({ limits: Schema.Array(PlainLimit), prices: Schema.optionalWith(Pricing.PriceTable, exact) }),
    exact
  ),
  tenant: Schema.optionalWith(Schema.NonEmptyString, exact),
  job: Schema.optionalWith(Schema.NonEmptyString, exact),
  learnOutput: Schema.optionalWith(Schema.Boolean, exact)
})

const governorFields = ["retry", "fallback", "priority"] as const

const formatted = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
    path: issue.path.map(String).join("."),
    message: issue.message
  }))

/** The Governor's options of a client's. */
const governorOptions = (options: ClientOptions): Governor.Options => ({
  ...(options.retry === undefined ? {} : { retry: options.retry }),
  ...(options.fallback === undefined ? {} : { fallback: options.fallback.map((model) => ({ model })) }),
  ...(options.priority === undefined ? {} : { priority: options.priority }),
  // The params Sluice reads are a summary of what is sent: two calls that look
  // alike to it may differ (images, thinking), so they are never joined.
  coalesce: false
})

/**
 * Checks every option at once; the error names each wrong one. Quotas are
 * checked whole (their limits and periods), not only their shape.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (options: ClientOptions): Either.Either<ClientOptions, InvalidClientOptions> =>
  validateWith(options, [])

/**
 * {@link validate}, for a facade whose options add `extra` fields it checks itself.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validateWith = <O extends ClientOptions>(
  options: O,
  extra: ReadonlyArray<string>
): Either.Either<O, InvalidClientOptions> => {
  if (!Predicate.isRecord(options)) {
    return Either.left(new InvalidClientOptions({ issues: [{ path: "", message: "Expected an options object" }] }))
  }
  const issues: Array<{ readonly path: string; readonly message: string }> = []
  const known = new Set<string>([...Object.keys(ClientSchema.fields), ...governorFields, ...extra])
  for (const name of Object.keys(options)) if (!known.has(name)) issues.push({ path: name, message: "Unknown option" })
  const { fallback: _fallback, priority: _priority, retry: _retry, ...rest } = options
  const own = Object.fromEntries(Object.entries(rest).filter(([name]) => !extra.includes(name)))
  const decoded = Schema.decodeUnknownEither(ClientSchema, { errors: "all" })(own)
  if (Either.isLeft(decoded)) { for (const issue of formatted(decoded.left)) issues.push(issue) }
  for (const [model, quota] of Object.entries(Predicate.isRecord(options.quotas) ? options.quotas : {})) {
    const checked = Quota.decodeEither(quota, model)
    if (Either.isLeft(checked)) {
      for (const issue of checked.left.issues) {
        issues.push({ path: `quotas.${model}.${issue.path}`.replace(/\.$/, ""), message: issue.message })
      }
    }
  }
  if (
    options.fallback !== undefined &&
    !(Array.isArray(options.fallback) && options.fallback.every((model) => typeof model === "string" && model !== ""))
  ) {
    issues.push({ path: "fallback", message: "Expected an array of model names" })
  }
  const governor = Governor.validate({
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    ...(options.priority === undefined ? {} : { priority: options.priority })
  })
  if (Either.isLeft(governor)) { for (const issue of governor.left.issues) issues.push(issue) }
  return issues.length === 0
    ? Either.right(options)
    : Either.left(new InvalidClientOptions({ issues: Issues.deepest(issues) }))
}

// ---------------------------------------------------------------------------
// Errors, as ordinary Error subclasses
// ---------------------------------------------------------------------------

/**
 * Everything a call through the client can fail with, typed.
 *
 * @since 0.1.0
 * @category models
 */
export type Reason =
  | LlmClient.CallError
  | InvalidClientOptions
  | ClientClosed
  | InvalidRequest
  // Checked by `createClient` already; listed because the layers could still refuse them.
  | Quota.InvalidQuota
  | Pricing.InvalidPriceTable
  | Budget.InvalidBudget
  | Governor.InvalidGovernorOptions

/**
 * A failure of the client: an ordinary `Error` whose `reason` is Sluice's
 * typed error and `_tag` its tag. `status` is the HTTP status when the
 * provider answered.
 *
 * @example
 * ```ts
 * import { BudgetExceededError, type Client, SluiceError } from "@sluice/providers/Promise"
 *
 * const ask = async (anthropic: Client) => {
 *   try {
 *     return await anthropic.messages.create({
 *       model: "claude-haiku-4-5",
 *       max_tokens: 256,
 *       messages: [{ role: "user", content: "Hi" }]
 *     })
 *   } catch (error) {
 *     if (error instanceof BudgetExceededError) console.log(error.reason.limitUsd)
 *     else if (error instanceof SluiceError) console.log(error._tag, error.message)
 *     throw error
 *   }
 * }
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class SluiceError<R extends Reason = Reason> extends Error {
  /**
   * The tag of the typed error, e.g. `"BudgetExceeded"`.
   *
   * @since 0.1.0
   */
  readonly _tag: R["_tag"]
  /**
   * Sluice's typed error.
   *
   * @since 0.1.0
   */
  readonly reason: R
  /**
   * The HTTP status, when the provider answered.
   *
   * @since 0.1.0
   */
  readonly status: number | undefined
  constructor(reason: R) {
    super(reason.message, { cause: reason })
    this.name = "SluiceError"
    this._tag = reason._tag
    this.reason = reason
    this.status = Predicate.hasProperty(reason, "status") && typeof reason.status === "number"
      ? reason.status
      : undefined
  }
}

/**
 * A 429 the retries could not get past. `reason.retryAfter` is the provider's hint.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimitedError extends SluiceError<LlmClient.RateLimited> {
  constructor(reason: LlmClient.RateLimited) {
    super(reason)
    this.name = "RateLimitedError"
  }
}

/**
 * 529: the provider was overloaded through every retry.
 *
 * @since 0.1.0
 * @category errors
 */
export class OverloadedError extends SluiceError<LlmClient.Overloaded> {
  constructor(reason: LlmClient.Overloaded) {
    super(reason)
    this.name = "OverloadedError"
  }
}

/**
 * A budget refused the call before any money was spent.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetExceededError extends SluiceError<Budget.BudgetExceeded> {
  constructor(reason: Budget.BudgetExceeded) {
    super(reason)
    this.name = "BudgetExceededError"
  }
}

/**
 * The limiter turned the call away (its lane was full, or its cost can never fit the quota).
 *
 * @since 0.1.0
 * @category errors
 */
export class ShedError extends SluiceError<RateLimiter.Shed | RateLimiter.CostTooLarge> {
  constructor(reason: RateLimiter.Shed | RateLimiter.CostTooLarge) {
    super(reason)
    this.name = "ShedError"
  }
}

/**
 * Thrown by {@link createClient}: an option is wrong; `reason.issues` names each.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptionsError extends SluiceError<InvalidClientOptions> {
  constructor(reason: InvalidClientOptions) {
    super(reason)
    this.name = "InvalidOptionsError"
  }
}

/**
 * A call after `close()`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ClosedError extends SluiceError<ClientClosed> {
  constructor(reason: ClientClosed) {
    super(reason)
    this.name = "ClosedError"
  }
}

/**
 * The typed reason as the `Error` subclass that names it.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toError = (reason: Reason): SluiceError => {
  switch (reason._tag) {
    case "RateLimited":
      return new RateLimitedError(reason)
    case "Overloaded":
      return new OverloadedError(reason)
    case "BudgetExceeded":
      return new BudgetExceededError(reason)
    case "Shed":
    case "CostTooLarge":
      return new ShedError(reason)
    case "InvalidClientOptions":
      return new InvalidOptionsError(reason)
    case "ClientClosed":
      return new ClosedError(reason)
    default:
      return new SluiceError(reason)
  }
}

// ---------------------------------------------------------------------------
// Messages API params as the request Sluice estimates
// ---------------------------------------------------------------------------

const textOf = (content: unknown): string =>
  typeof content === "string"
    ? content
    : Array.isArray(content)
    ? content.map((block) =>
      Predicate.hasProperty(block, "text") && typeof block.text === "string"
        ? block.text
        : `[${Predicate.hasProperty(block, "type") ? String(block.type) : "block"}]`
    ).join("\n")
    : ""

/** A block as Sluice counts it; what is not text (images, documents, thinking signatures) counts as a short marker. */
const blockOf = (block: Sdk.ContentBlockParam): LlmClient.ContentBlock => {
  switch (block.type) {
    case "text":
      return block.cache_control
        ? { type: "text", text: block.text, cacheControl: { type: "ephemeral" } }
        : { type: "text", text: block.text }
    case "tool_use":
      return { type: "tool_use", id: block.id, name: block.name, input: block.input }
    case "tool_result":
      return {
        type: "tool_result",
        toolUseId: block.tool_use_id,
        content: textOf(block.content),
        ...(block.is_error == null ? {} : { isError: block.is_error })
      }
    case "thinking":
      return { type: "text", text: block.thinking }
    default:
      return { type: "text", text: `[${block.type}]` }
  }
}

const toolChoiceOf = (choice: Sdk.ToolChoice): LlmClient.ToolChoice =>
  choice.type === "tool" ? { type: "tool", name: choice.name } : { type: choice.type }

/**
 * Messages API params as `LlmClient.Request`: what the estimator counts, the
 * quota key and the budget go by. The params themselves travel with it as its
 * `native` body, which the Anthropic layer sends as it is (with the model of
 * the rung) and answers with the SDK's message as the response's `native`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toRequest = (params: Sdk.MessageCreateParamsBase, call: CallOptions = {}): LlmClient.Request => {
  const system = params.system === undefined ? undefined : textOf(params.system)
  const tools = params.tools?.map((tool): LlmClient.Tool => {
    const custom = tool as {
      readonly name: string
      readonly description?: string
      readonly input_schema?: LlmClient.Tool["inputSchema"]
    }
    return {
      name: custom.name,
      description: custom.description,
      inputSchema: custom.input_schema ?? { type: "object" }
    }
  })
  const metadata: LlmClient.RequestMetadata = {
    ...(call.priority === undefined ? {} : { priority: call.priority }),
    ...(call.tenant === undefined ? {} : { tenant: call.tenant }),
    ...(call.job === undefined ? {} : { job: call.job })
  }
  // A system prompt given as blocks may mark a cache breakpoint: the prefix up to it is cached (tools and system).
  const systemCached = Array.isArray(params.system) && params.system.some((block) => block.cache_control != null)
  return {
    model: params.model,
    ...(system === undefined ? {} : { system }),
    ...(systemCached ? { systemCacheControl: { type: "ephemeral" as const } } : {}),
    messages: params.messages.map((message) => ({
      // A mid-conversation system turn counts as text like any other.
      role: message.role === "assistant" ? "assistant" as const : "user" as const,
      content: typeof message.content === "string" ? message.content : message.content.map(blockOf)
    })),
    ...(tools === undefined ? {} : { tools }),
    ...(params.tool_choice === undefined ? {} : { toolChoice: toolChoiceOf(params.tool_choice) }),
    maxOutputTokens: params.max_tokens,
    ...(params.stop_sequences === undefined ? {} : { stopSequences: params.stop_sequences }),
    ...(Object.keys(metadata).length === 0 ? {} : { metadata }),
    // Sent as they are; the layer sets `stream` itself, by the call (`complete` or `stream`).
    native: Anthropic.native(withoutStream(params))
  }
}

/** Params without `stream`: the Anthropic layer sets it by the call it makes. */
const withoutStream = (params: Sdk.MessageCreateParamsBase): Sdk.MessageCreateParamsNonStreaming => {
  const { stream: _stream, ...rest } = params
  return rest
}

/** Where this module enters the SDK's promises itself (`countTokens`): the fiber's signal cancels the request. */
const callSdk = <A>(
  model: string | undefined,
  f: (signal: AbortSignal) => Promise<A>
): Effect.Effect<A, LlmClient.ProviderError> =>
  Effect.tryPromise({ try: f, catch: (cause) => cause }).pipe(
    // The Anthropic layer's own mapping: one place decides what an SDK error means.
    Effect.catchAll((cause) => Effect.flip(Anthropic.fromSdkError("anthropic", model, undefined)(cause)))
  )

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * The governed client: the SDK's `messages` surface, and `close`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client {
  readonly messages: {
    /**
     * `anthropic.messages.create(params)`, governed. With `stream: true` it
     * resolves, once the call is admitted and answering, to an async iterable
     * of the SDK's raw events (and a `controller` to abort it), as the SDK's
     * `Stream` does; a refusal (the budget's, the limiter's) rejects it.
     */
    readonly create: {
      (params: Sdk.MessageCreateParamsNonStreaming, options?: CallOptions): Promise<Sdk.Message>
      (params: Sdk.MessageCreateParamsStreaming, options?: CallOptions): Promise<EventStream<Sdk.RawMessageStreamEvent>>
      (
        params: Sdk.MessageCreateParamsBase,
        options?: CallOptions
      ): Promise<Sdk.Message | EventStream<Sdk.RawMessageStreamEvent>>
    }
    /**
     * `anthropic.messages.stream(params)`, governed: the SDK's own
     * `MessageStream` (async iteration of its events, `on("text")`,
     * `finalMessage()`, `finalText()`, `abort()`). A refusal rejects
     * `finalMessage()` and the iteration with the typed error.
     */
    readonly stream: (params: Sdk.MessageStreamParams, options?: CallOptions) => MessageStream
    /** `anthropic.messages.countTokens(params)`: the provider's own count (not governed: it has its own limit). */
    readonly countTokens: (
      params: Sdk.MessageCountTokensParams,
      options?: CallOptions
    ) => Promise<Sdk.MessageTokensCount>
  }
  /** Live figures of a model's quota: waiting calls, calls in flight, bucket levels. */
  readonly stats: (model: string) => Promise<RateLimiter.KeyStats>
  /** Each budget limit's state now: spent and reserved dollars. Empty without a budget. */
  readonly budget: () => Promise<ReadonlyArray<Budget.Status>>
  /** Releases the runtime (limiter, estimator, budget, SDK); later calls reject with `ClosedError`. Idempotent. */
  readonly close: () => Promise<void>
}

/**
 * The async iterable a streamed `create` resolves to, as the SDK's `Stream`:
 * iterable once; `controller.abort()` or a `break` stops the response and
 * releases the call's admission.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventStream<T> extends AsyncIterable<T> {
  readonly controller: AbortController
}

/** The quota key of a model: the Governor's default, `anthropic/model`; a name already spelled so stays as it is. */
const keyOf = (model: string): string =>
  model.startsWith("anthropic/")
    ? model
    : Governor.defaultKey(false)({ model, messages: [], maxOutputTokens: 1 }, "anthropic")

/**
 * Everything a client runs on, from valid options: the governed `LlmClient`, the SDK, the limiter, the estimator, the budget.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: ClientOptions) => {
  const anthropic: Anthropic.Options = {
    apiKey: Redacted.make(options.apiKey),
    ...(options.baseURL === undefined ? {} : { baseURL: options.baseURL }),
    ...(options.timeout === undefined ? {} : { timeout: Duration.decode(options.timeout as Duration.DurationInput) })
  }
  // The Anthropic layer itself: it sends the `native` params `toRequest` attaches.
  const provider = Anthropic.layer(anthropic)
  // `provideMerge` keeps the consumer's outputs over the provider's: the
  // `LlmClient` of the result is the governed one; the SDK passes through.
  return Governor.layer(governorOptions(options)).pipe(
    Layer.provideMerge(provider),
    Layer.provideMerge(servicesLayer(options, keyOf))
  )
}

/**
 * What a facade's Governor runs on besides its provider, from valid options:
 * the limiter (in memory, quotas under the facade's keys, keys without quota
 * and responses without limit headers logged once: `QuotaKeys`), the
 * estimator and, when the options set one, the budget. Both facades build
 * their stacks with it.
 *
 * @since 0.1.0
 * @category layers
 */
export const servicesLayer = (options: ClientOptions, keyOf: (model: string) => string) => {
  const quotas = Object.fromEntries(Object.entries(options.quotas ?? {}).map(([model, quota]) => [keyOf(model), quota]))
  const limiter = QuotaKeys.layerMemory({
    quotas,
    ...(options.maxConcurrency === undefined ? {} : { maxInFlight: options.maxConcurrency })
  })
  const estimator = TokenEstimator.layer({ learnOutput: options.learnOutput ?? false })
  const budget = options.budget === undefined
    ? Layer.empty
    : Budget.layer({ limits: options.budget.limits.map(toBudgetLimit) }).pipe(
      Layer.provide([Pricing.layer(options.budget.prices ?? Pricing.defaultTable), Budget.layerLedgerMemory])
    )
  return Layer.mergeAll(limiter, estimator, budget)
}

/**
 * The SDK's `MessageStream`, whose failures are Sluice's own errors: the SDK
 * wraps an error its source throws in an `AnthropicError` (the original as
 * `cause`); a {@link SluiceError} is handed on as it is, so `finalMessage()`
 * rejects with `BudgetExceededError`, not a wrapper.
 */
class GovernedMessageStream extends MessageStream {
  /** `MessageStream.fromReadableStream`, as this class (the SDK's static builds a plain `MessageStream`). */
  static of(source: ReadableStream<Uint8Array>): GovernedMessageStream {
    const runner = new GovernedMessageStream(null)
    runner._run(() => runner._fromReadableStream(source))
    return runner
  }

  protected override _emit<Event extends keyof MessageStreamEvents>(
    event: Event,
    ...args: Parameters<MessageStreamEvents[Event]>
  ): void {
    const [error] = args as ReadonlyArray<unknown>
    if (event === "error" && Predicate.hasProperty(error, "cause") && error.cause instanceof SluiceError) {
      return (super._emit as (event: string, error: unknown) => void)("error", error.cause)
    }
    return super._emit(event, ...args)
  }
}

/**
 * A governed client with the Anthropic SDK's `messages` surface. Throws
 * {@link InvalidOptionsError} naming every bad option.
 *
 * @example
 * ```ts
 * import { createClient } from "@sluice/providers/Promise"
 *
 * const main = async () => {
 *   const anthropic = createClient({
 *     apiKey: "sim-key",
 *     baseURL: "http://127.0.0.1:8787", // the simulator
 *     quotas: { "claude-haiku-4-5": { requests: { limit: 50, per: "1 minute" } } }
 *   })
 *   const message = await anthropic.messages.create({
 *     model: "claude-haiku-4-5",
 *     max_tokens: 256,
 *     messages: [{ role: "user", content: "Hi" }]
 *   })
 *   console.log(message.content, message.usage)
 *   await anthropic.close()
 * }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const createClient = (options: ClientOptions): Client => {
  const valid = validate(options)
  if (Either.isLeft(valid)) throw new InvalidOptionsError(valid.left)
  const runtime = ManagedRuntime.make(layer(valid.right))
  const runner = Facade.runner(runtime, toError, () => new ClosedError(new ClientClosed()))
  const { close, ensureOpen, run } = runner
  const callOf = (call: CallOptions): CallOptions => Facade.withDefaults(valid.right, call)

  /** The governed stream of a call's raw events, pulled from a Promise. */
  const events = (params: Sdk.MessageCreateParamsBase, call: CallOptions, signal: AbortSignal) => {
    ensureOpen()
    const governed = Stream.unwrap(Effect.gen(function*() {
      if (!Predicate.isRecord(params) || !Array.isArray(params.messages)) {
        return yield* new InvalidRequest({ detail: "Expected Messages API params with `messages`" })
      }
      const client = yield* LlmClient.LlmClient
      return client.stream(toRequest(params, callOf(call)))
    })).pipe(
      Stream.filterMap((event) =>
        event._tag === "Native" && event.event.api === Anthropic.api
          ? Option.some(event.event.body as Sdk.RawMessageStreamEvent)
          : Option.none()
      )
    )
    return Facade.pull(runtime, governed, toError, call.signal ? AbortSignal.any([signal, call.signal]) : signal)
  }

  // Async: a call after `close()` rejects, as every other call does, rather than throwing.
  const createStreaming = async (params: Sdk.MessageCreateParamsStreaming, call: CallOptions) =>
    new Facade.GovernedStream((signal) => events(params, call, signal)).prime()

  const stream = (params: Sdk.MessageStreamParams, call: CallOptions = {}): MessageStream => {
    const encoder = new TextEncoder()
    let pulled: Facade.Pull<Sdk.RawMessageStreamEvent> | undefined
    // The SDK's own `MessageStream`, fed the governed events as the lines its `toReadableStream` writes.
    const messageStream: MessageStream = GovernedMessageStream.of(
      new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          try {
            pulled ??= events(params as Sdk.MessageCreateParamsBase, call, messageStream.controller.signal)
            const next = await pulled.next()
            if (next.done) controller.close()
            else controller.enqueue(encoder.encode(`${JSON.stringify(next.value)}\n`))
          } catch (error) {
            controller.error(error)
          }
        },
        cancel: () => pulled?.close()
      })
    )
    return messageStream
  }

  return {
    messages: {
      stream,
      create:
        ((params: Sdk.MessageCreateParamsBase, call: CallOptions = {}) =>
          params.stream === true ? createStreaming({ ...params, stream: true }, call) : run(
            Effect.gen(function*() {
              if (!Predicate.isRecord(params) || !Array.isArray(params.messages)) {
                return yield* new InvalidRequest({ detail: "Expected Messages API params with `messages`" })
              }
              const client = yield* LlmClient.LlmClient
              const response = yield* client.complete(toRequest(params, callOf(call)))
              // The Anthropic layer answers native params with the native message; without it something is broken.
              return yield* Option.match(Anthropic.messageOf(response), {
                onNone: () => Effect.dieMessage("Sluice: the SDK's message was lost on the way back"),
                onSome: Effect.succeed
              })
            }),
            call.signal
          )) as Client["messages"]["create"],
      countTokens: (params, call = {}) =>
        run(
          Effect.flatMap(Anthropic.AnthropicSdkClient, (sdk) =>
            callSdk(params.model, (signal) => sdk.messages.countTokens(params, { signal }))),
          call.signal
        )
    },
    ...Facade.status(runner, keyOf),
    close
  }
}
