/**
 * Sluice under `@effect/ai`: a layer that governs a `LanguageModel`, so that an
 * app written against `LanguageModel.generateText` / `generateObject` /
 * `streamText` gets the limiter, the budget and the retry policy by providing
 * one more layer, without changing a line of its own.
 *
 * One call through the governed model, from the outside in:
 *
 * 1. **Retry** (`Retry.retry`) — a 429, 529, 5xx or lost connection is retried
 *    with full jitter, the provider's `retry-after` as the floor; every retry
 *    passes the budget and the limiter again. Streams are not retried (a stream
 *    that already produced text cannot be replayed safely).
 * 2. **Estimation** — the prompt (system, every message, tool definitions and,
 *    for `generateObject`, the object's schema) is counted by the calibrated
 *    `TokenEstimator`; the output reservation is `maxOutputTokens`.
 * 3. **Budget** (when a `Budget` is in context) — the worst case is reserved
 *    before the call and settled to the real cost after it.
 * 4. **Limiter** — the whole cost is reserved on the quota key
 *    (`provider/model`) before the call; after it the permit settles to the
 *    usage the response reports (its finish part), and the estimator learns.
 *    A 429 (`AiError.HttpResponseError` with status 429) is read with its
 *    headers: the rate-limit headers are observed and the key is paused until
 *    its `retry-after`, for every waiter at once.
 *
 * Errors stay those of `LanguageModel` (`AiError`), so the app's error
 * handling does not change: a provider failure is the `AiError` the underlying
 * model raised (after the retries), and a refusal by Sluice (`BudgetExceeded`,
 * `Shed`, `CostTooLarge`, …) is an `AiError.UnknownError` with `module: "Sluice"`
 * whose `cause` is the typed Sluice error — {@link governanceError} gets it back.
 *
 * `@effect/ai`'s `LanguageModel` does not say which model it calls nor what its
 * `max_tokens` is, so the options name them; keep `maxOutputTokens` equal to
 * the model's configured `max_tokens` (4,096 when `AnthropicLanguageModel` is
 * given none). A call can override it, and its priority, tenant and job, with
 * {@link withCall}.
 *
 * @example
 * ```ts
 * import { AnthropicClient, AnthropicLanguageModel } from "@effect/ai-anthropic"
 * import { LanguageModel } from "@effect/ai"
 * import { FetchHttpClient } from "@effect/platform"
 * import { Config, Effect, Layer } from "effect"
 * import { RateLimiter, TokenEstimator } from "@sluice/core"
 * import * as EffectAi from "@sluice/providers/EffectAi"
 *
 * const quotas = { "anthropic/claude-haiku-4-5": { requests: { limit: 50, per: "1 minute" } } } as const
 * const Model = EffectAi.layerGoverned({ model: "claude-haiku-4-5", maxOutputTokens: 1_024 }).pipe(
 *   Layer.provide(AnthropicLanguageModel.model("claude-haiku-4-5", { max_tokens: 1_024 })),
 *   Layer.provide(AnthropicClient.layerConfig({ apiKey: Config.redacted("ANTHROPIC_API_KEY") })),
 *   Layer.provide([FetchHttpClient.layer, RateLimiter.layerMemory({ quotas }), TokenEstimator.layer()])
 * )
 * const program = LanguageModel.generateText({ prompt: "Say hi" }) // unchanged
 * program.pipe(Effect.provide(Model))
 * ```
 *
 * @since 0.1.0
 */
import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import * as AiModel from "@effect/ai/Model"
import * as Prompt from "@effect/ai/Prompt"
import type * as Response from "@effect/ai/Response"
import * as Tool from "@effect/ai/Tool"
import { Admission, Governor, LlmClient, Quota, RateLimiter, Retry, SluiceError, TokenEstimator } from "@sluice/core"
import type { Priority } from "@sluice/core"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Errors from "./internal/errors.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * Options of the governed model. `model` is required; every other field has a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends
  Pick<
    Governor.Options,
    | "retry"
    | "priority"
    | "cacheCounting"
    | "cacheReadsCount"
    | "predictCacheReads"
    | "promptCacheTtl"
    | "pauseWithoutHint"
  >
{
  /** The model the underlying `LanguageModel` calls: the quota key, the price and the calibration go by it. */
  readonly model: string
  /** The provider's name in the quota key. Default: `@effect/ai`'s `ProviderName` in context (a `Model` layer provides it), else "anthropic". */
  readonly provider?: string | undefined
  /** The quota key. Default `provider/model`. */
  readonly key?: string | undefined
  /** The output reserved per call: the model's `max_tokens`. Default 4,096 (what `AnthropicLanguageModel` sends when given none). */
  readonly maxOutputTokens?: number | undefined
}

/**
 * Options that could not be accepted; each issue names its field (`retry.maxAttempts`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidEffectAiOptions extends Data.TaggedError("InvalidEffectAiOptions")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid EffectAi options: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

const exact = { exact: true } as const
/** The fields of this module's own; the rest are the Governor's, checked by `Governor.validate`. */
const OwnSchema = Schema.Struct({
  model: Schema.NonEmptyString,
  provider: Schema.optionalWith(Schema.NonEmptyString, exact),
  key: Schema.optionalWith(Schema.NonEmptyString, exact),
  maxOutputTokens: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), exact)
})

/**
 * Checks the options; the error names every wrong field.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (options: Options): Either.Either<Options, InvalidEffectAiOptions> => {
  const { key, maxOutputTokens, model, provider, ...governed } = options
  const own = Schema.decodeUnknownEither(OwnSchema, { errors: "all" })({
    model,
    ...(provider === undefined ? {} : { provider }),
    ...(key === undefined ? {} : { key }),
    ...(maxOutputTokens === undefined ? {} : { maxOutputTokens })
  })
  const issues = [
    ...(Either.isLeft(own)
      ? ParseResult.ArrayFormatter.formatErrorSync(own.left).map((issue) => ({
        path: issue.path.map(String).join("."),
        message: issue.message
      }))
      : []),
    ...Either.match(Governor.validate(governed), { onLeft: (error) => error.issues, onRight: () => [] })
  ]
  return issues.length === 0 ? Either.right(options) : Either.left(new InvalidEffectAiOptions({ issues }))
}

// ---------------------------------------------------------------------------
// Per-call options
// ---------------------------------------------------------------------------

/**
 * What one call may say about itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  readonly priority?: Priority.Class | undefined
  readonly tenant?: string | undefined
  readonly job?: string | undefined
  /** The output to reserve for this call, when it overrides the model's `max_tokens`. */
  readonly maxOutputTokens?: number | undefined
  /** Give up with `RateLimiter.WaitTimeout` (as an `AiError`) when not admitted within this long. */
  readonly maxWait?: Duration.DurationInput | undefined
}

/**
 * The per-call options in effect; empty unless {@link withCall} set them.
 *
 * @since 0.1.0
 * @category services
 */
export class CurrentCall extends Context.Reference<CurrentCall>()("@sluice/providers/EffectAi/CurrentCall", {
  defaultValue: (): CallOptions => ({})
}) {}

/**
 * Runs `self` with per-call options: its priority class, tenant and job (for
 * budgets), and its output reservation.
 *
 * @example
 * ```ts
 * import { LanguageModel } from "@effect/ai"
 * import * as EffectAi from "@sluice/providers/EffectAi"
 *
 * const answer = (prompt: string) =>
 *   LanguageModel.generateText({ prompt }).pipe(EffectAi.withCall({ priority: "interactive", tenant: "acme" }))
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const withCall = (options: CallOptions) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(self, CurrentCall, options)

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * The Sluice refusal inside an `AiError`, if it is one: the governed model
 * fails with `AiError.UnknownError({ module: "Sluice", cause })` when the
 * budget, the limiter or a breaker refused the call, because a `LanguageModel`
 * fails with `AiError` only.
 *
 * @example
 * ```ts
 * import { LanguageModel } from "@effect/ai"
 * import * as EffectAi from "@sluice/providers/EffectAi"
 * import { Effect, Option } from "effect"
 *
 * const answer = (prompt: string, fallbackAnswer: string) =>
 *   LanguageModel.generateText({ prompt }).pipe(
 *     Effect.map((response) => response.text),
 *     Effect.catchTag("UnknownError", (error) =>
 *       Option.match(EffectAi.governanceError(error), {
 *         onNone: () => Effect.fail(error),
 *         onSome: (refusal) => refusal._tag === "BudgetExceeded" ? Effect.succeed(fallbackAnswer) : Effect.fail(error)
 *       }))
 *   )
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const governanceError = (error: unknown): Option.Option<SluiceError.GovernanceError> =>
  error instanceof AiError.UnknownError && error.module === "Sluice" && SluiceError.isGovernanceError(error.cause)
    ? Option.some(error.cause)
    : Option.none()

/** A Sluice refusal as the `AiError` a `LanguageModel` may fail with. */
const refusal = (method: string) => (error: SluiceError.GovernanceError): AiError.UnknownError =>
  new AiError.UnknownError({ module: "Sluice", method, description: error.message, cause: error })

/**
 * Reads an `@effect/ai` failure as Sluice's provider error, so that the retry
 * policy and the limiter understand it: an HTTP status (429 with its headers,
 * 529, 5xx, 4xx) or a lost connection. Other failures (malformed output, a
 * tool's own error) are not the provider's and stay as they are.
 *
 * @since 0.1.0
 * @category utilities
 */
export const classify =
  (provider: string, model: string) => (error: unknown): Effect.Effect<Option.Option<LlmClient.ProviderError>> =>
    Effect.gen(function*() {
      if (error instanceof AiError.HttpResponseError && error.reason === "StatusCode") {
        const headers = error.response.headers
        // @effect/ai keeps the body as text: read its type, code and message as the provider layers do.
        const body = Errors.readErrorBody(error.body)
        return Option.some(Errors.fromHttpFailure({
          provider,
          model,
          status: error.response.status,
          headers,
          errorType: body.errorType,
          errorCode: body.errorCode,
          detail: body.message ?? error.description ?? error.message,
          now: yield* Clock.currentTimeMillis,
          rateLimits: yield* RateLimitHeaders.read(headers)
        }))
      }
      if (error instanceof AiError.HttpRequestError && error.reason === "Transport") {
        return Option.some(Errors.network(provider, model, error))
      }
      return Option.none()
    })

// ---------------------------------------------------------------------------
// Estimation: an @effect/ai prompt as the request the estimator counts
// ---------------------------------------------------------------------------

const json = (value: unknown): string => {
  if (typeof value === "string") return value
  try {
    return JSON.stringify(value) ?? ""
  } catch {
    return String(value)
  }
}

/** A file part counts as a short marker: its bytes are not text, and calibration absorbs the difference. */
const filePart = (part: Prompt.FilePart): LlmClient.TextBlock => ({
  type: "text",
  text: `[file ${part.mediaType}${part.fileName === undefined ? "" : ` ${part.fileName}`}]`
})

/** Anthropic's cache mark on a prompt part or message (`options.anthropic.cacheControl`), as `@effect/ai-anthropic` reads it. */
const cacheControlOf = (item: { readonly options: unknown }): { readonly type: "ephemeral" } | undefined =>
  Predicate.hasProperty(item.options, "anthropic") && Predicate.hasProperty(item.options.anthropic, "cacheControl") &&
    item.options.anthropic.cacheControl != null
    ? { type: "ephemeral" }
    : undefined

/**
 * A message's parts as blocks. A text part keeps its cache mark, or the
 * message's when it is the last part (where `@effect/ai-anthropic` puts it).
 */
const toBlocks = (
  parts: ReadonlyArray<Prompt.UserMessagePart | Prompt.AssistantMessagePart | Prompt.ToolMessagePart>,
  messageMark?: { readonly type: "ephemeral" } | undefined
): ReadonlyArray<LlmClient.ContentBlock> =>
  parts.map((part, index): LlmClient.ContentBlock => {
    switch (part.type) {
      case "text":
      case "reasoning": {
        const mark = cacheControlOf(part) ?? (index === parts.length - 1 ? messageMark : undefined)
        return mark === undefined
          ? { type: "text", text: part.text }
          : { type: "text", text: part.text, cacheControl: mark }
      }
      case "file":
        return filePart(part)
      case "tool-call":
        return { type: "tool_use", id: part.id, name: part.name, input: part.params }
      case "tool-result":
        return { type: "tool_result", toolUseId: part.id, content: json(part.result), isError: part.isFailure }
    }
  })

/** A tool as the estimator counts it: name, description and parameters' JSON Schema. */
const toolOf = (tool: Tool.Any): LlmClient.Tool => ({
  name: tool.name,
  description: tool.description,
  inputSchema: jsonSchemaOf(tool.parametersSchema)
})

const jsonSchemaOf = (schema: Schema.Schema.Any): LlmClient.Tool["inputSchema"] => ({
  type: "object",
  ...(Tool.getJsonSchemaFromSchemaAst(schema.ast) as unknown as Record<string, unknown>)
})

/**
 * What a `generateText` / `generateObject` / `streamText` call sends, as the request the estimator counts.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallShape {
  readonly prompt: Prompt.RawInput
  readonly toolkit?: unknown
  readonly schema?: Schema.Schema.Any | undefined
  readonly objectName?: string | undefined
}

/**
 * The `LlmClient.Request` an `@effect/ai` call amounts to, for estimation:
 * system messages become the system prompt, tool messages user turns with
 * tool results, the toolkit's tools (and `generateObject`'s schema, which
 * providers send as a tool) tool definitions.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toRequest = (call: CallShape, model: string, maxOutputTokens: number): LlmClient.Request => {
  const prompt = Prompt.make(call.prompt)
  const system: Array<string> = []
  let systemCached = false
  const messages: Array<LlmClient.Message> = []
  for (const message of prompt.content) {
    switch (message.role) {
      case "system":
        system.push(message.content)
        systemCached ||= cacheControlOf(message) !== undefined
        break
      case "user":
      case "tool":
        messages.push({ role: "user", content: toBlocks(message.content, cacheControlOf(message)) })
        break
      case "assistant":
        messages.push({ role: "assistant", content: toBlocks(message.content, cacheControlOf(message)) })
        break
    }
  }
  const tools: Array<LlmClient.Tool> = []
  const toolkit = call.toolkit
  if (Predicate.hasProperty(toolkit, "tools") && Predicate.isRecord(toolkit.tools)) {
    for (const tool of Object.values(toolkit.tools)) if (Tool.isUserDefined(tool)) tools.push(toolOf(tool))
  }
  if (call.schema !== undefined) {
    tools.push({
      name: call.objectName ?? "generateObject",
      inputSchema: jsonSchemaOf(call.schema)
    })
  }
  return {
    model,
    ...(system.length === 0 ? {} : { system: system.join("\n\n") }),
    ...(systemCached ? { systemCacheControl: { type: "ephemeral" as const } } : {}),
    messages,
    ...(tools.length === 0 ? {} : { tools }),
    maxOutputTokens
  }
}

/**
 * The usage a response's finish part reports, split as Sluice counts it:
 * `inputTokens` uncached, `cachedInputTokens` cache reads, and cache writes
 * from the provider's metadata where it gives them (Anthropic's
 * `cache_creation_input_tokens`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const usageOf = (parts: ReadonlyArray<Response.AnyPart>): Option.Option<LlmClient.Usage> => {
  const finish = parts.find((part): part is Response.FinishPart => part.type === "finish")
  if (finish === undefined) return Option.none()
  const raw: unknown = finish.metadata?.["anthropic"]
  const written =
    Predicate.hasProperty(raw, "usage") && Predicate.hasProperty(raw.usage, "cache_creation_input_tokens") &&
      typeof raw.usage.cache_creation_input_tokens === "number"
      ? raw.usage.cache_creation_input_tokens
      : 0
  return Option.some({
    inputTokens: finish.usage.inputTokens ?? 0,
    outputTokens: finish.usage.outputTokens ?? 0,
    cacheReadInputTokens: finish.usage.cachedInputTokens ?? 0,
    cacheWriteInputTokens: written
  })
}

// ---------------------------------------------------------------------------
// The governed model
// ---------------------------------------------------------------------------

/**
 * Builds the governed `LanguageModel` over the one in context, with the
 * `RateLimiter` and `TokenEstimator` in context, and the `Budget` when one is
 * provided.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<
  LanguageModel.Service,
  never,
  LanguageModel.LanguageModel | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> =>
  Effect.gen(function*() {
    const inner = yield* LanguageModel.LanguageModel
    const estimator = yield* TokenEstimator.TokenEstimator
    const providerName = yield* Effect.serviceOption(AiModel.ProviderName)
    const provider = options.provider ?? Option.getOrElse(providerName, () => "anthropic")
    const model = options.model
    const key = options.key ?? `${provider}/${model}`
    const rule = Quota.cacheCountingFor({ ...Quota.defaultCacheCounting, ...options.cacheCounting }, provider, model)
    const counting = options.cacheReadsCount === undefined
      ? rule
      : { ...rule, cacheReadsCount: options.cacheReadsCount }
    const admission = yield* Admission.make({
      pauseWithoutHint: options.pauseWithoutHint ?? Duration.seconds(1),
      ...(options.predictCacheReads === undefined ? {} : { predictCacheReads: options.predictCacheReads }),
      ...(options.promptCacheTtl === undefined ? {} : { promptCacheTtl: options.promptCacheTtl })
    })
    const readError = classify(provider, model)

    const toProviderError = (error: unknown) =>
      Effect.map(
        readError(error),
        Option.match({
          onNone: () => error,
          onSome: (read): unknown => Object.assign(read, { [OriginalError]: error })
        })
      )

    const prepare = (method: string, shape: CallShape) =>
      Effect.gen(function*() {
        const call = yield* CurrentCall
        const request = yield* Effect.try({
          try: () => toRequest(shape, model, call.maxOutputTokens ?? options.maxOutputTokens ?? 4_096),
          // The prompt is not one @effect/ai accepts: the same error the model itself would raise.
          catch: (cause) =>
            new AiError.MalformedInput({ module: "Sluice", method, description: "The prompt could not be read", cause })
        })
        const estimate = yield* estimator.estimate(request)
        return { call, request, estimate, priority: call.priority ?? options.priority ?? "normal" }
      })

    /** The admission path's view of one call. */
    const admissionCall = (prepared: Effect.Effect.Success<ReturnType<typeof prepare>>): Admission.Call => ({
      key,
      request: prepared.request,
      estimate: prepared.estimate,
      counting,
      priority: prepared.priority,
      ...(prepared.call.maxWait === undefined ? {} : { maxWait: prepared.call.maxWait })
    })

    /** What a finished `@effect/ai` response tells the admission path: its usage, from the finish part. */
    const answerOf = (response: { readonly content: ReadonlyArray<Response.AnyPart> }): Admission.Answer | undefined =>
      Option.match(usageOf(response.content), { onNone: () => undefined, onSome: (usage) => ({ usage }) })

    /** One governed attempt of a whole call, through the admission path. */
    const attempt = <A extends { readonly content: ReadonlyArray<Response.AnyPart> }>(
      method: string,
      shape: CallShape,
      run: () => Effect.Effect<A, unknown, unknown>
    ): Effect.Effect<A, unknown, unknown> =>
      Effect.flatMap(prepare(method, shape), (prepared) =>
        admission.run(
          admissionCall(prepared),
          Effect.catchAll(Effect.suspend(run), (error) => Effect.flip(toProviderError(error))),
          answerOf
        )).pipe(Effect.catchIf(Admission.isAdmissionError, (error) => Effect.fail(refusal(method)(error))))

    const governed = <A extends { readonly content: ReadonlyArray<Response.AnyPart> }>(
      method: string,
      shape: CallShape,
      run: () => Effect.Effect<A, unknown, unknown>
    ): Effect.Effect<A, unknown, unknown> => {
      const once = attempt(method, shape, run)
      const retried = options.retry === false ? once : Retry.retry(once, options.retry ?? {})
      return retried.pipe(
        Effect.mapError(originalOf),
        Effect.withSpan(`EffectAi.${method}`, { attributes: { model, key } })
      )
    }

    /**
     * A streamed call: reserved like a whole one, settled when the finish part
     * arrives. Not retried: a stream that already produced text cannot be
     * replayed safely.
     */
    const governedStream = <A>(
      shape: CallShape,
      run: () => Stream.Stream<A, unknown, unknown>
    ): Stream.Stream<A, unknown, unknown> =>
      Stream.unwrap(Effect.map(prepare("streamText", shape), (prepared) =>
        admission.stream(
          admissionCall(prepared),
          Stream.catchAll(Stream.suspend(run), (error) => Stream.fromEffect(Effect.flip(toProviderError(error)))),
          (part: A) => answerOf({ content: [part as Response.AnyPart] })
        ))).pipe(
          Stream.mapError(originalOf),
          Stream.catchAll((error) =>
            Admission.isAdmissionError(error) ? Stream.fail(refusal("streamText")(error)) : Stream.fail(error)
          )
        )

    // The service's methods are generic in their options; the governed ones keep
    // the underlying model's types and add only `AiError` (a Sluice refusal is
    // an `AiError.UnknownError`), which every `ExtractError<Options>` includes.
    const service: LanguageModel.Service = {
      generateText: ((call: LanguageModel.GenerateTextOptions<{}>) =>
        governed("generateText", call, () => inner.generateText(call))) as LanguageModel.Service["generateText"],
      generateObject: ((call: LanguageModel.GenerateObjectOptions<{}, unknown, Record<string, unknown>, unknown>) =>
        governed("generateObject", call, () =>
          inner.generateObject(call))) as LanguageModel.Service["generateObject"],
      streamText: ((call: LanguageModel.GenerateTextOptions<{}>) =>
        governedStream(call, () =>
          inner.streamText(call))) as LanguageModel.Service["streamText"]
    }
    return service
  })

/**
 * Where a provider error read from an `@effect/ai` error keeps the original,
 * handed back after the retries. A property, not a map keyed by the error:
 * Effect wraps an error failed inside a span in a proxy, so identity is lost.
 */
const OriginalError = Symbol.for("@sluice/providers/EffectAi/OriginalError")

/** The `@effect/ai` error a provider error was read from, or the error itself. */
const originalOf = (error: unknown): unknown =>
  Predicate.hasProperty(error, OriginalError) ? error[OriginalError] : error

/**
 * A governed `LanguageModel` over the `LanguageModel` below it: provide the
 * underlying model (e.g. `AnthropicLanguageModel.model(...)`) to this layer,
 * with a `RateLimiter`, a `TokenEstimator` and, to cap spend, a `Budget`.
 *
 * @example
 * ```ts
 * import { AnthropicLanguageModel } from "@effect/ai-anthropic"
 * import * as EffectAi from "@sluice/providers/EffectAi"
 * import { Layer } from "effect"
 *
 * const Governed = EffectAi.layerGoverned({ model: "claude-haiku-4-5", maxOutputTokens: 512 }).pipe(
 *   Layer.provide(AnthropicLanguageModel.model("claude-haiku-4-5", { max_tokens: 512 }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGoverned = (options: Options): Layer.Layer<
  LanguageModel.LanguageModel,
  InvalidEffectAiOptions,
  LanguageModel.LanguageModel | RateLimiter.RateLimiter | TokenEstimator.TokenEstimator
> => Layer.effect(LanguageModel.LanguageModel, Effect.flatMap(validate(options), make))
