/**
 * `LlmClient` over the official `@anthropic-ai/sdk`.
 *
 * - The SDK's own retries are off (`maxRetries: 0`): Sluice's retry policy is
 *   the only one, and every retry passes the limiter again.
 * - Every response's headers are read (`withResponse`) into a
 *   `RateLimitSnapshot`, so the limiter learns what the provider says remains.
 * - SDK errors become `LlmClient.ProviderError` at this one boundary: 429 with
 *   its `retry-after` and the bucket that ran out, 529 `overloaded_error`, 5xx,
 *   4xx, and the `x-should-retry` verdict.
 * - Prompt caching: `systemCacheControl` and `TextBlock.cacheControl` become
 *   the SDK's `cache_control` blocks; the usage's `cache_read_input_tokens`
 *   and `cache_creation_input_tokens` become `cacheReadInputTokens` and
 *   `cacheWriteInputTokens`, `input_tokens` the uncached rest.
 * - The SDK is called through one helper that passes the fiber's `AbortSignal`,
 *   so interrupting a call cancels the HTTP request.
 * - A request whose `native` is Messages API params ({@link native}) is sent
 *   as those params, with the request's model (a fallback rung's), and its
 *   response carries the SDK's `Message` as `native` ({@link messageOf}): the
 *   Promise facade passes the caller's params through the Governor this way.
 *
 * Configuration through `Config`: `ANTHROPIC_API_KEY` (redacted, never logged)
 * and `ANTHROPIC_BASE_URL` (e.g. the simulator's URL).
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { LlmClient } from "@sluice/core"
 * import { Anthropic } from "@sluice/providers"
 *
 * const AnthropicLive = Anthropic.layer({ apiKey: Redacted.make("sim-key"), baseURL: "http://127.0.0.1:8787" })
 * // or, from the environment: Anthropic.layerConfig()
 * ```
 *
 * @since 0.1.0
 */
import AnthropicSdk from "@anthropic-ai/sdk"
import type * as Sdk from "@anthropic-ai/sdk/resources/messages/messages"
import { LlmClient } from "@sluice/core"
import type { RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as Errors from "./internal/errors.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"

/**
 * Options of the Anthropic client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly apiKey: Redacted.Redacted<string>
  /** Another endpoint that speaks the Messages API, such as the simulator. Default: Anthropic's. */
  readonly baseURL?: string | undefined
  /** The longest a call may take. Default 10 minutes (the SDK's own default). */
  readonly timeout?: Duration.DurationInput | undefined
  /** The provider name errors and metrics report. Default "anthropic". */
  readonly provider?: string | undefined
}

/**
 * The underlying SDK instance, for what `LlmClient` does not cover.
 *
 * @since 0.1.0
 * @category services
 */
export class AnthropicSdkClient extends Context.Tag("@sluice/providers/Anthropic/AnthropicSdkClient")<
  AnthropicSdkClient,
  AnthropicSdk
>() {}

// ---------------------------------------------------------------------------
// Request and response mapping
// ---------------------------------------------------------------------------

const toBlock = (block: LlmClient.ContentBlock): Sdk.ContentBlockParam => {
  switch (block.type) {
    case "text":
      return block.cacheControl === undefined
        ? { type: "text", text: block.text }
        : { type: "text", text: block.text, cache_control: { type: "ephemeral" } }
    case "tool_use":
      return { type: "tool_use", id: block.id, name: block.name, input: block.input }
    case "tool_result":
      return block.isError === undefined
        ? { type: "tool_result", tool_use_id: block.toolUseId, content: block.content }
        : { type: "tool_result", tool_use_id: block.toolUseId, content: block.content, is_error: block.isError }
  }
}

const toToolChoice = (choice: LlmClient.ToolChoice): Sdk.ToolChoice => {
  switch (choice.type) {
    case "auto":
      return { type: "auto" }
    case "any":
      return { type: "any" }
    case "none":
      return { type: "none" }
    case "tool":
      return { type: "tool", name: choice.name }
  }
}

/**
 * The Messages API body of a request (without `stream`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const toParams = (request: LlmClient.Request): Sdk.MessageCreateParamsNonStreaming => {
  const params: Sdk.MessageCreateParamsNonStreaming = {
    model: request.model,
    max_tokens: request.maxOutputTokens,
    messages: request.messages.map((message) => ({
      role: message.role,
      content: typeof message.content === "string" ? message.content : message.content.map(toBlock)
    }))
  }
  if (request.system !== undefined) {
    params.system = request.systemCacheControl === undefined
      ? request.system
      : [{ type: "text", text: request.system, cache_control: { type: "ephemeral" } }]
  }
  if (request.tools !== undefined) {
    params.tools = request.tools.map((tool) => ({
      name: tool.name,
      ...(tool.description === undefined ? {} : { description: tool.description }),
      input_schema: tool.inputSchema as Sdk.Tool.InputSchema
    }))
  }
  if (request.toolChoice !== undefined) params.tool_choice = toToolChoice(request.toolChoice)
  // The Messages API of this SDK version takes no temperature; `request.temperature` is not sent.
  if (request.stopSequences !== undefined) params.stop_sequences = [...request.stopSequences]
  return params
}

/**
 * The `LlmClient.Native` api this layer speaks, whatever its `provider` name: the Messages API.
 *
 * @since 0.1.0
 * @category utilities
 */
export const api = "anthropic"

/**
 * Messages API params as a request's `native` body: this layer sends them as they are.
 *
 * @since 0.1.0
 * @category utilities
 */
export const native = (params: Sdk.MessageCreateParamsNonStreaming): LlmClient.Native => ({ api, body: params })

/**
 * The Messages API body this layer sends for a request: its `native` params
 * with the request's model when it has them (whoever set them vouches they
 * are Messages API params), the translation ({@link toParams}) otherwise.
 */
const paramsOf = (request: LlmClient.Request): Sdk.MessageCreateParamsNonStreaming =>
  request.native?.api === api
    ? { ...(request.native.body as Sdk.MessageCreateParamsNonStreaming), model: request.model, stream: false }
    : toParams(request)

/**
 * The SDK's `Message` of a response to a request with `native` params, as the API returned it.
 *
 * @since 0.1.0
 * @category utilities
 */
export const messageOf = (response: LlmClient.Response): Option.Option<Sdk.Message> =>
  response.native?.api === api ? Option.some(response.native.body as Sdk.Message) : Option.none()

const toStopReason = (reason: string | null | undefined): LlmClient.StopReason => {
  switch (reason) {
    case "end_turn":
    case "max_tokens":
    case "stop_sequence":
    case "tool_use":
    case "refusal":
      return reason
    default:
      return "other"
  }
}

const toUsage = (usage: Partial<Sdk.Usage> | undefined): LlmClient.Usage => ({
  inputTokens: usage?.input_tokens ?? 0,
  outputTokens: usage?.output_tokens ?? 0,
  cacheReadInputTokens: usage?.cache_read_input_tokens ?? 0,
  cacheWriteInputTokens: usage?.cache_creation_input_tokens ?? 0
})

const fromContent = (content: ReadonlyArray<Sdk.ContentBlock>): ReadonlyArray<LlmClient.ContentBlock> =>
  content.flatMap((block): ReadonlyArray<LlmClient.ContentBlock> => {
    switch (block.type) {
      case "text":
        return [{ type: "text", text: block.text }]
      case "tool_use":
        return [{ type: "tool_use", id: block.id, name: block.name, input: block.input }]
      default:
        return []
    }
  })

/**
 * Maps a Messages API response to `LlmClient.Response`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromMessage = (message: Sdk.Message, rateLimits: RateLimitSnapshot): LlmClient.Response => ({
  id: message.id,
  model: message.model,
  content: fromContent(message.content),
  stopReason: toStopReason(message.stop_reason),
  usage: toUsage(message.usage),
  rateLimits
})

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * Maps whatever the Anthropic SDK threw to the error union: the one mapping,
 * used by this layer and by the Promise facade. The body's type, its
 * `details.error_code` and its message reach `fromHttpFailure`, so a billing
 * refusal is `QuotaExhausted`, never a `RateLimited` that pauses the key.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSdkError =
  (provider: string, model: string | undefined, timeoutAfter: Duration.Duration | undefined) =>
  (cause: unknown): Effect.Effect<LlmClient.ProviderError> =>
    Effect.gen(function*() {
      if (cause instanceof AnthropicSdk.APIConnectionTimeoutError) return Errors.timeout(provider, model, timeoutAfter)
      if (cause instanceof AnthropicSdk.APIConnectionError) return Errors.network(provider, model, cause.cause ?? cause)
      if (cause instanceof AnthropicSdk.APIError && cause.status !== undefined) {
        const headers = cause.headers ?? new Headers()
        const body = Errors.readErrorBody(cause.error)
        return Errors.fromHttpFailure({
          provider,
          model,
          status: cause.status,
          headers,
          errorType: body.errorType,
          errorCode: body.errorCode,
          detail: body.message ?? cause.message,
          now: yield* Clock.currentTimeMillis,
          rateLimits: yield* RateLimitHeaders.read(headers, "anthropic")
        })
      }
      return Errors.network(provider, model, cause)
    })

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * Builds an `LlmClient` over an SDK instance created here with retries off.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<LlmClient.Provider & { readonly sdk: AnthropicSdk }> =>
  Effect.sync(() => {
    const provider = options.provider ?? "anthropic"
    const timeoutAfter = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
    // Everything explicit: the SDK would otherwise read ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN from
    // the environment behind the layer's back (configuration goes through `layerConfig` and `Config`).
    const sdk = new AnthropicSdk({
      apiKey: Redacted.value(options.apiKey),
      authToken: null,
      maxRetries: 0,
      baseURL: options.baseURL ?? "https://api.anthropic.com",
      ...(timeoutAfter === undefined ? {} : { timeout: Duration.toMillis(timeoutAfter) })
    })

    /** The one place the SDK's promises are entered: the fiber's signal cancels the request. */
    const use = <A>(model: string | undefined, f: (sdk: AnthropicSdk, signal: AbortSignal) => Promise<A>) =>
      Effect.tryPromise({ try: (signal) => f(sdk, signal), catch: (cause) => cause }).pipe(
        Effect.catchAll((cause) => Effect.flip(fromSdkError(provider, model, timeoutAfter)(cause)))
      )

    const complete = (request: LlmClient.Request) =>
      Effect.gen(function*() {
        const { data, response } = yield* use(request.model, (client, signal) =>
          client.messages.create(paramsOf(request), { signal }).withResponse())
        const rateLimits = yield* RateLimitHeaders.read(response.headers, "anthropic")
        const answer = fromMessage(data, rateLimits)
        // Who sent native params gets the native message back, every field of it.
        return request.native?.api === api ? { ...answer, native: { api, body: data } } : answer
      }).pipe(Effect.withSpan("Anthropic.complete", { attributes: { model: request.model } }))

    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.ProviderError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const controller = yield* Effect.acquireRelease(
          Effect.sync(() => new AbortController()),
          (controller) => Effect.sync(() => controller.abort())
        )
        const { data, response } = yield* use(
          request.model,
          (client) =>
            client.messages.create({ ...paramsOf(request), stream: true }, { signal: controller.signal }).withResponse()
        )
        const rateLimits = yield* RateLimitHeaders.read(response.headers, "anthropic")
        // Who sent native params gets every raw event too, before the events it completes.
        const speaksNative = request.native?.api === api
        return Stream.fromAsyncIterable(data, (cause) => cause).pipe(
          Stream.catchAll((cause) =>
            Stream.fromEffect(Effect.flip(fromSdkError(provider, request.model, timeoutAfter)(cause)))
          ),
          Stream.mapAccum(initialAccumulator(), (acc, event) => {
            const [next, events] = accumulate(acc, event, rateLimits)
            return [
              next,
              speaksNative ? [{ _tag: "Native", event: { api, body: event } } as const, ...events] : events
            ] as const
          }),
          Stream.flattenIterables
        )
      }))

    const countTokens = (request: LlmClient.Request) => {
      const params = paramsOf(request)
      return Effect.map(
        use(request.model, (client, signal) =>
          client.messages.countTokens({
            model: params.model,
            messages: params.messages,
            ...(params.system === undefined ? {} : { system: params.system }),
            ...(params.tools === undefined ? {} : { tools: params.tools })
          }, { signal })),
        (count) => count.input_tokens
      )
    }

    return { provider, complete, stream, countTokens, sdk }
  })

// ---------------------------------------------------------------------------
// Streaming: raw events to LlmClient events
// ---------------------------------------------------------------------------

interface Accumulator {
  readonly id: string
  readonly model: string
  readonly blocks: Map<
    number,
    { type: "text"; text: string } | { type: "tool_use"; id: string; name: string; json: string }
  >
  readonly content: Array<LlmClient.ContentBlock>
  usage: Partial<Sdk.Usage>
  stopReason: string | null
}

const initialAccumulator = (): Accumulator => ({
  id: "",
  model: "",
  blocks: new Map(),
  content: [],
  usage: {},
  stopReason: null
})

const parseJson = (json: string): unknown => {
  if (json.trim() === "") return {}
  try {
    return JSON.parse(json)
  } catch {
    return json
  }
}

/** One raw SSE event in, the events it completes out. */
const accumulate = (
  acc: Accumulator,
  event: Sdk.RawMessageStreamEvent,
  rateLimits: RateLimitSnapshot
): readonly [Accumulator, ReadonlyArray<LlmClient.StreamEvent>] => {
  switch (event.type) {
    case "message_start":
      return [{ ...acc, id: event.message.id, model: event.message.model, usage: { ...event.message.usage } }, []]
    case "content_block_start": {
      const block = event.content_block
      if (block.type === "text") acc.blocks.set(event.index, { type: "text", text: block.text })
      if (block.type === "tool_use") {
        acc.blocks.set(event.index, { type: "tool_use", id: block.id, name: block.name, json: "" })
      }
      return [acc, block.type === "text" && block.text !== "" ? [{ _tag: "TextDelta", text: block.text }] : []]
    }
    case "content_block_delta": {
      const block = acc.blocks.get(event.index)
      if (event.delta.type === "text_delta" && block?.type === "text") {
        block.text += event.delta.text
        return [acc, [{ _tag: "TextDelta", text: event.delta.text }]]
      }
      if (event.delta.type === "input_json_delta" && block?.type === "tool_use") block.json += event.delta.partial_json
      return [acc, []]
    }
    case "content_block_stop": {
      const block = acc.blocks.get(event.index)
      if (block === undefined) return [acc, []]
      acc.blocks.delete(event.index)
      if (block.type === "text") {
        acc.content.push({ type: "text", text: block.text })
        return [acc, []]
      }
      const call: LlmClient.ToolUseBlock = {
        type: "tool_use",
        id: block.id,
        name: block.name,
        input: parseJson(block.json)
      }
      acc.content.push(call)
      return [acc, [{ _tag: "ToolCall", call }]]
    }
    case "message_delta": {
      const usage = { ...acc.usage }
      for (const [key, value] of Object.entries(event.usage)) {
        if (typeof value === "number") (usage as Record<string, number>)[key] = value
      }
      acc.usage = usage
      acc.stopReason = event.delta.stop_reason ?? acc.stopReason
      return [acc, []]
    }
    case "message_stop":
      return [acc, [{
        _tag: "Done",
        response: {
          id: acc.id,
          model: acc.model,
          content: [...acc.content],
          stopReason: toStopReason(acc.stopReason),
          usage: toUsage(acc.usage),
          rateLimits
        }
      }]]
    default:
      return [acc, []]
  }
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/**
 * `LlmClient` and the raw SDK, from options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<LlmClient.LlmClient | AnthropicSdkClient> =>
  Layer.effectContext(
    Effect.map(make(options), (client) =>
      Context.make(LlmClient.LlmClient, LlmClient.LlmClient.of(client)).pipe(
        Context.add(AnthropicSdkClient, client.sdk)
      ))
  )

/**
 * The configuration read by {@link layerConfig}.
 *
 * @since 0.1.0
 * @category utilities
 */
export const config: Config.Config<Options> = Config.all({
  apiKey: Config.redacted("ANTHROPIC_API_KEY"),
  baseURL: Config.option(Config.string("ANTHROPIC_BASE_URL")).pipe(Config.map(Option.getOrUndefined))
})

/**
 * `LlmClient` from `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` (or another `Config` of options).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options> = config
): Layer.Layer<LlmClient.LlmClient | AnthropicSdkClient, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(options, layer))
