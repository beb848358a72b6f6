/**
 * An in-process simulated provider: an `LlmClient` over the simulator's engine
 * (the same quotas, token counting, answers and faults as the HTTP simulator),
 * with no network. Prompt caching works as on the HTTP simulator:
 * `systemCacheControl` and `TextBlock.cacheControl` mark breakpoints, usage
 * reports cache reads and writes, and reads are free against the input limit.
 * Time and randomness come from Effect, so a user's pipeline
 * runs against it under `TestClock` — a 429 pause, a refill or a latency is a
 * `TestClock.adjust` away.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient } from "@sluice/core"
 * import { SimulatedClient } from "@sluice/simulator"
 *
 * const SimLive = SimulatedClient.layer({ quota: { requestsPerMinute: 50, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 } })
 * // program.pipe(Effect.provide(SimLive)) — then read SimulatedClient.SimulatedStats for what the "provider" saw
 * ```
 *
 * @since 0.1.0
 */
import { LlmClient } from "@sluice/core"
import type { RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Answers from "./internal/answers.js"
import * as Engine from "./internal/engine.js"
import * as Cache from "./internal/promptCache.js"
import * as Quota from "./internal/quota.js"
import * as Tokens from "./internal/tokens.js"

/**
 * Options: the simulator's engine configuration plus the API key the client calls with.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Engine.EngineConfig {
  /** The key whose quota the calls count against. Default "sim-key". */
  readonly apiKey?: string | undefined
  /** The provider name errors report. Default "simulator". */
  readonly provider?: string | undefined
}

/**
 * What the simulated provider counted, per key and model (the judge of 429s and utilisation).
 *
 * @since 0.1.0
 * @category services
 */
export class SimulatedStats extends Context.Tag("@sluice/simulator/SimulatedClient/SimulatedStats")<
  SimulatedStats,
  {
    readonly stats: Effect.Effect<{ readonly keys: ReadonlyArray<Engine.KeyStats> }>
    readonly reset: Effect.Effect<void>
  }
>() {}

/** The simulator's view of a key as the snapshot a provider's headers would give, read now (`observedAt`). */
const snapshotOf = (views: Quota.Views, retryAfterMs?: number): Effect.Effect<RateLimitSnapshot> =>
  Effect.map(Clock.currentTimeMillis, (observedAt) => {
    const state = (view: Quota.BucketView) => ({
      limit: view.limit,
      remaining: view.remaining,
      resetAfter: Duration.millis(view.fullAfterMs)
    })
    const dimensions = {
      requests: state(views.requests),
      inputTokens: state(views.inputTokens),
      outputTokens: state(views.outputTokens)
    }
    return retryAfterMs === undefined
      ? { dimensions, observedAt }
      : { dimensions, retryAfter: Duration.millis(retryAfterMs), observedAt }
  })

/** One block as the Messages API writes it: `cache_control` for `cacheControl`, `tool_use_id` for `toolUseId`. */
const toWireBlock = (block: LlmClient.ContentBlock) => {
  switch (block.type) {
    case "text":
      return block.cacheControl === undefined
        ? { type: "text", text: block.text }
        : { type: "text", text: block.text, cache_control: block.cacheControl }
    case "tool_result":
      return { ...block, tool_use_id: block.toolUseId }
    default:
      return block
  }
}

/** The Messages API body the engine reads. */
const toBody = (request: LlmClient.Request): Answers.MessagesBody => ({
  model: request.model,
  max_tokens: request.maxOutputTokens,
  messages: request.messages.map((message) => ({
    role: message.role,
    content: typeof message.content === "string" ? message.content : message.content.map(toWireBlock)
  })),
  ...(request.system === undefined
    ? {}
    : request.systemCacheControl === undefined
    ? { system: request.system }
    : { system: [{ type: "text", text: request.system, cache_control: request.systemCacheControl }] }),
  ...(request.tools === undefined
    ? {}
    : {
      tools: request.tools.map((tool) => ({
        name: tool.name,
        description: tool.description,
        input_schema: tool.inputSchema
      }))
    }),
  ...(request.toolChoice === undefined ? {} : { tool_choice: request.toolChoice })
})

let counter = 0

/**
 * Builds the simulated client and its stats; a foreign-load fiber, if configured, lives in the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<
  { readonly client: LlmClient.Provider; readonly stats: SimulatedStats["Type"] },
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const engine = yield* Engine.make(options)
    const apiKey = options.apiKey ?? "sim-key"
    const provider = options.provider ?? "simulator"

    const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.ProviderError> =>
      Effect.gen(function*() {
        const base = { provider, model: request.model }
        if (request.messages.length === 0) {
          return yield* new LlmClient.BadRequest({
            ...base,
            status: 400,
            detail: "messages: at least one message is required"
          })
        }
        if (!Number.isInteger(request.maxOutputTokens) || request.maxOutputTokens < 1) {
          return yield* new LlmClient.BadRequest({
            ...base,
            status: 400,
            detail: `max_tokens: must be a positive integer, got ${request.maxOutputTokens}`
          })
        }
        const body = toBody(request)
        switch (yield* engine.fault(apiKey, request.model)) {
          case "overloaded":
            return yield* new LlmClient.Overloaded({ ...base, status: 529, detail: "Overloaded" })
          case "server-error":
            return yield* new LlmClient.ServerError({ ...base, status: 500, detail: "Internal server error" })
          case "reset":
            return yield* new LlmClient.NetworkError({ ...base, detail: "connection reset by peer" })
          case "malformed":
            return yield* new LlmClient.NetworkError({ ...base, detail: "malformed response body" })
          case "rate-limited": {
            const views = yield* engine.views(apiKey, request.model)
            return yield* new LlmClient.RateLimited({
              ...base,
              status: 429,
              detail: "Rate limited (injected burst)",
              retryAfter: Duration.seconds(1),
              rateLimits: yield* snapshotOf(views, 1_000)
            })
          }
          case "none":
            break
        }
        const breakpoints = Cache.countBreakpoints(body)
        if (breakpoints > Cache.maxBreakpoints) {
          return yield* new LlmClient.BadRequest({
            ...base,
            status: 400,
            detail:
              `A maximum of ${Cache.maxBreakpoints} blocks with cache_control may be provided. Found ${breakpoints}.`
          })
        }
        const inputTokens = Tokens.countTokens(body)
        const admission = yield* engine.admit(
          apiKey,
          request.model,
          inputTokens,
          "anthropic",
          request.maxOutputTokens,
          Cache.cachePrefixes(body)
        )
        if (admission._tag === "Limited") {
          const retryAfterMs = Math.ceil(admission.retryAfterMs / 1000) * 1000
          return yield* new LlmClient.RateLimited({
            ...base,
            status: 429,
            detail: `This request would exceed the rate limit of ${admission.limit} ${admission.dimension} per minute`,
            retryAfter: Duration.millis(retryAfterMs),
            dimension: admission.dimension,
            rateLimits: yield* snapshotOf(admission.views, retryAfterMs)
          })
        }
        const answer = Answers.answerFor(body)
        yield* engine.latency(answer.outputTokens)
        const views = yield* engine.finish(apiKey, request.model, answer.outputTokens, "anthropic")
        const content: ReadonlyArray<LlmClient.ContentBlock> = answer.kind === "tool"
          ? [{ type: "tool_use", id: `toolu_sim${++counter}`, name: answer.tool, input: answer.input }]
          : [{ type: "text", text: answer.text }]
        return {
          id: `msg_sim${++counter}_${yield* Clock.currentTimeMillis}`,
          model: request.model,
          content,
          stopReason: answer.stop === "tool_use"
            ? "tool_use"
            : answer.stop === "max_tokens"
            ? "max_tokens"
            : "end_turn",
          usage: { ...admission.usage, outputTokens: answer.outputTokens },
          rateLimits: yield* snapshotOf(views)
        } satisfies LlmClient.Response
      }).pipe(Effect.withSpan("SimulatedClient.complete", { attributes: { model: request.model } }))

    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.ProviderError> =>
      Stream.flatMap(Stream.fromEffect(complete(request)), (response) =>
        Stream.fromIterable<LlmClient.StreamEvent>([
          ...response.content.flatMap((block): ReadonlyArray<LlmClient.StreamEvent> =>
            block.type === "tool_use"
              ? [{ _tag: "ToolCall", call: block }]
              : block.type === "text"
              ? [{ _tag: "TextDelta", text: block.text }]
              : []
          ),
          { _tag: "Done", response }
        ]))

    const countTokens = (request: LlmClient.Request) => Effect.succeed(Tokens.countTokens(toBody(request)))

    return {
      client: { provider, complete, stream, countTokens },
      stats: { stats: engine.stats, reset: engine.reset }
    }
  })

/**
 * The simulated provider as `LlmClient`, with its stats.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<LlmClient.LlmClient | SimulatedStats> =>
  Layer.scopedContext(
    Effect.map(make(options), ({ client, stats }) =>
      Context.make(LlmClient.LlmClient, LlmClient.LlmClient.of(client)).pipe(Context.add(SimulatedStats, stats)))
  )
