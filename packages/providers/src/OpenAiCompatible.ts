/**
 * `LlmClient` over OpenAI-compatible chat completions, on `@effect/platform`'s
 * `HttpClient`: OpenAI, Azure OpenAI (`auth: "api-key"` and an `api-version`
 * query) and local servers that copy the API.
 *
 * Same boundary as the Anthropic layer: the `x-ratelimit-*` (and Azure
 * `retry-after-ms`) headers of every response become a `RateLimitSnapshot`,
 * failures become `LlmClient.ProviderError`, and the response body is decoded
 * with `Schema` (a malformed body is a retryable `NetworkError`, never a defect).
 *
 * Streaming: `stream` reads the server-sent chunks as they come (`stream:
 * true`, `stream_options: { include_usage: true }`): text at once, each tool
 * call when its arguments are whole, `Done` with the usage of the last chunk.
 *
 * A request whose `native` is chat completions params ({@link native}) is sent
 * as those params with the request's model; its response carries the API's
 * `ChatCompletion` as `native`, and its stream each chunk as a `Native` event:
 * the OpenAI Promise facade passes the caller's params through the Governor
 * this way.
 *
 * @example
 * ```ts
 * import { FetchHttpClient } from "@effect/platform"
 * import { Layer, Redacted } from "effect"
 * import { OpenAiCompatible } from "@sluice/providers"
 *
 * const OpenAiLive = OpenAiCompatible.layer({ apiKey: Redacted.make("sk-..."), baseURL: "https://api.openai.com/v1" })
 *   .pipe(Layer.provide(FetchHttpClient.layer))
 * ```
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { LlmClient } from "@sluice/core"
import type { RateLimitSnapshot } from "@sluice/core/RateLimitSnapshot"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Errors from "./internal/errors.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"

/**
 * Options of an OpenAI-compatible client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly apiKey: Redacted.Redacted<string>
  /** The API root, e.g. `https://api.openai.com/v1` or `https://NAME.openai.azure.com/openai/deployments/DEPLOYMENT`. */
  readonly baseURL: string
  /** `bearer` (OpenAI, default) or `api-key` (Azure). */
  readonly auth?: "bearer" | "api-key" | undefined
  /** Extra query parameters, e.g. `{ "api-version": "2024-10-21" }` for Azure. */
  readonly query?: { readonly [name: string]: string } | undefined
  /** The longest a call may take. Default 10 minutes. */
  readonly timeout?: Duration.DurationInput | undefined
  /** The provider name errors report. Default "openai". */
  readonly provider?: string | undefined
}

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

const WireToolCall = Schema.Struct({
  id: Schema.String,
  function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
})

const WireUsage = Schema.Struct({
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.Number,
  prompt_tokens_details: Schema.optional(
    Schema.NullOr(Schema.Struct({ cached_tokens: Schema.optional(Schema.NullOr(Schema.Number)) }))
  )
})

const ChatCompletion = Schema.Struct({
  id: Schema.String,
  model: Schema.String,
  choices: Schema.NonEmptyArray(Schema.Struct({
    message: Schema.Struct({
      content: Schema.optional(Schema.NullOr(Schema.String)),
      tool_calls: Schema.optional(Schema.NullOr(Schema.Array(WireToolCall)))
    }),
    finish_reason: Schema.optional(Schema.NullOr(Schema.String))
  })),
  usage: Schema.optional(Schema.NullOr(WireUsage))
})

const ErrorBody = Schema.Struct({
  error: Schema.Struct({
    message: Schema.optional(Schema.String),
    type: Schema.optional(Schema.NullOr(Schema.String)),
    code: Schema.optional(Schema.NullOr(Schema.Union(Schema.String, Schema.Number)))
  })
})

const decodeCompletion = Schema.decodeUnknownEither(ChatCompletion)
const decodeErrorBody = Schema.decodeUnknownOption(ErrorBody)

const textOf = (content: LlmClient.Message["content"]): string =>
  typeof content === "string"
    ? content
    : content.flatMap((block) => block.type === "text" ? [block.text] : []).join("")

/**
 * The chat completions body of a request.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toBody = (request: LlmClient.Request): Record<string, unknown> => {
  const messages: Array<Record<string, unknown>> = []
  if (request.system !== undefined) messages.push({ role: "system", content: request.system })
  for (const message of request.messages) {
    if (typeof message.content === "string") {
      messages.push({ role: message.role, content: message.content })
      continue
    }
    const results = message.content.filter((block) => block.type === "tool_result")
    for (const result of results) {
      messages.push({ role: "tool", tool_call_id: result.toolUseId, content: result.content })
    }
    const calls = message.content.filter((block) => block.type === "tool_use")
    const text = textOf(message.content)
    if (calls.length > 0) {
      messages.push({
        role: "assistant",
        content: text === "" ? null : text,
        tool_calls: calls.map((call) => ({
          id: call.id,
          type: "function",
          function: { name: call.name, arguments: JSON.stringify(call.input) }
        }))
      })
    } else if (text !== "" || results.length === 0) {
      messages.push({ role: message.role, content: text })
    }
  }
  const body: Record<string, unknown> = { model: request.model, messages, max_tokens: request.maxOutputTokens }
  if (request.tools !== undefined) {
    body.tools = request.tools.map((tool) => ({
      type: "function",
      function: {
        name: tool.name,
        ...(tool.description === undefined ? {} : { description: tool.description }),
        parameters: tool.inputSchema
      }
    }))
  }
  if (request.toolChoice !== undefined) {
    const choice = request.toolChoice
    body.tool_choice = choice.type === "any"
      ? "required"
      : choice.type === "tool"
      ? { type: "function", function: { name: choice.name } }
      : choice.type
  }
  if (request.temperature !== undefined) body.temperature = request.temperature
  if (request.stopSequences !== undefined) body.stop = request.stopSequences
  return body
}

const toStopReason = (reason: string | null | undefined): LlmClient.StopReason => {
  switch (reason) {
    case "stop":
      return "end_turn"
    case "length":
      return "max_tokens"
    case "tool_calls":
    case "function_call":
      return "tool_use"
    case "content_filter":
      return "refusal"
    default:
      return "other"
  }
}

const parseArguments = (json: string): unknown => {
  try {
    return JSON.parse(json)
  } catch {
    return json
  }
}

/**
 * The `LlmClient.Native` api this layer speaks: chat completions.
 *
 * @since 0.1.0
 * @category utilities
 */
export const api = "openai"

/**
 * Chat completions params as a request's `native` body: this layer sends them
 * as they are (with the request's model), and answers with the API's own
 * `ChatCompletion` as the response's `native`, and its chunks as `Native`
 * stream events.
 *
 * @since 0.1.0
 * @category utilities
 */
export const native = (params: Record<string, unknown>): LlmClient.Native => ({ api, body: params })

/**
 * The body sent for a request: its `native` params with its model (and
 * without streaming fields, which `stream` sets itself), the translation
 * ({@link toBody}) otherwise.
 */
const bodyOf = (request: LlmClient.Request): Record<string, unknown> => {
  if (request.native?.api !== api || !Predicate.isRecord(request.native.body)) return toBody(request)
  const { stream: _stream, stream_options: _options, ...params } = request.native.body
  return { ...params, model: request.model }
}

const toUsage = (usage: typeof WireUsage.Type | null | undefined): LlmClient.Usage => {
  const cached = usage?.prompt_tokens_details?.cached_tokens ?? 0
  return {
    inputTokens: Math.max(0, (usage?.prompt_tokens ?? 0) - cached),
    outputTokens: usage?.completion_tokens ?? 0,
    cacheReadInputTokens: cached,
    cacheWriteInputTokens: 0
  }
}

const ChatCompletionChunk = Schema.Struct({
  id: Schema.String,
  model: Schema.String,
  choices: Schema.Array(Schema.Struct({
    delta: Schema.optional(Schema.NullOr(Schema.Struct({
      content: Schema.optional(Schema.NullOr(Schema.String)),
      tool_calls: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
        index: Schema.Number,
        id: Schema.optional(Schema.NullOr(Schema.String)),
        function: Schema.optional(Schema.NullOr(Schema.Struct({
          name: Schema.optional(Schema.NullOr(Schema.String)),
          arguments: Schema.optional(Schema.NullOr(Schema.String))
        })))
      }))))
    }))),
    finish_reason: Schema.optional(Schema.NullOr(Schema.String))
  })),
  usage: Schema.optional(Schema.NullOr(WireUsage))
})

const decodeChunkJson = Schema.decodeUnknownEither(Schema.parseJson())
const decodeChunkBody = Schema.decodeUnknownEither(ChatCompletionChunk)

/** One `data:` line: the chunk as the API sent it, and as this layer reads it. */
const decodeChunk = (data: string) =>
  Either.flatMap(
    decodeChunkJson(data),
    (raw) => Either.map(decodeChunkBody(raw), (parsed) => ({ raw, parsed }))
  )

interface ChunkAccumulator {
  id: string
  model: string
  text: string
  readonly calls: Map<number, { id: string; name: string; arguments: string }>
  finishReason: string | null
}

const initialChunks = (): ChunkAccumulator => ({ id: "", model: "", text: "", calls: new Map(), finishReason: null })

/** One chunk in, the events it completes out; the usage chunk (the last) ends the answer. */
const accumulateChunk = (
  acc: ChunkAccumulator,
  chunk: typeof ChatCompletionChunk.Type,
  rateLimits: RateLimitSnapshot
): ReadonlyArray<LlmClient.StreamEvent> => {
  acc.id = chunk.id
  acc.model = chunk.model
  const events: Array<LlmClient.StreamEvent> = []
  for (const choice of chunk.choices) {
    const delta = choice.delta
    if (delta?.content) {
      acc.text += delta.content
      events.push({ _tag: "TextDelta", text: delta.content })
    }
    for (const part of delta?.tool_calls ?? []) {
      const call = acc.calls.get(part.index) ?? { id: "", name: "", arguments: "" }
      if (part.id) call.id = part.id
      if (part.function?.name) call.name += part.function.name
      if (part.function?.arguments) call.arguments += part.function.arguments
      acc.calls.set(part.index, call)
    }
    if (choice.finish_reason) {
      acc.finishReason = choice.finish_reason
      for (const call of acc.calls.values()) {
        events.push({
          _tag: "ToolCall",
          call: { type: "tool_use", id: call.id, name: call.name, input: parseArguments(call.arguments) }
        })
      }
    }
  }
  if (chunk.usage != null) {
    const content: Array<LlmClient.ContentBlock> = acc.text === "" ? [] : [{ type: "text", text: acc.text }]
    for (const call of acc.calls.values()) {
      content.push({ type: "tool_use", id: call.id, name: call.name, input: parseArguments(call.arguments) })
    }
    events.push({
      _tag: "Done",
      response: {
        id: acc.id,
        model: acc.model,
        content,
        stopReason: toStopReason(acc.finishReason),
        usage: toUsage(chunk.usage),
        rateLimits
      }
    })
  }
  return events
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * Builds an `LlmClient` over the `HttpClient` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<LlmClient.Provider, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const provider = options.provider ?? "openai"
    const timeoutAfter = Duration.decode(options.timeout ?? Duration.minutes(10))
    const http = yield* HttpClient.HttpClient
    const url = `${options.baseURL.replace(/\/+$/, "")}/chat/completions`

    /**
     * Sends one body; a 4xx/5xx becomes the provider error its status and
     * body say. The response is read in the caller's scope.
     */
    const send = (model: string, body: Record<string, unknown>) =>
      Effect.gen(function*() {
        const base = HttpClientRequest.post(url).pipe(
          options.auth === "api-key"
            ? HttpClientRequest.setHeader("api-key", Redacted.value(options.apiKey))
            : HttpClientRequest.bearerToken(options.apiKey),
          HttpClientRequest.setUrlParams(options.query ?? {}),
          HttpClientRequest.bodyUnsafeJson(body)
        )
        const response = yield* http.execute(base).pipe(
          Effect.timeoutFail({
            duration: timeoutAfter,
            onTimeout: () => Errors.timeout(provider, model, timeoutAfter)
          }),
          Effect.catchTag("RequestError", (error) => Effect.fail(Errors.network(provider, model, error))),
          Effect.catchTag("ResponseError", (error) => Effect.fail(Errors.network(provider, model, error)))
        )
        const rateLimits = yield* RateLimitHeaders.read(response.headers, "auto")
        if (response.status >= 400) {
          const failed = yield* Effect.orElseSucceed(response.json, () => undefined)
          const wire = Option.getOrUndefined(decodeErrorBody(failed))
          return yield* Effect.fail(Errors.fromHttpFailure({
            provider,
            model,
            status: response.status,
            headers: response.headers,
            errorType: typeof wire?.error.code === "string" ? wire.error.code : wire?.error.type ?? undefined,
            detail: wire?.error.message ?? `HTTP ${response.status}`,
            now: yield* Clock.currentTimeMillis,
            rateLimits
          }))
        }
        return { response, rateLimits }
      })

    const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.ProviderError> =>
      Effect.gen(function*() {
        const { rateLimits, response } = yield* send(request.model, bodyOf(request))
        const body = yield* Effect.catchAll(
          response.json,
          (error) => Effect.fail(Errors.network(provider, request.model, error))
        )
        const completion = decodeCompletion(body)
        if (completion._tag === "Left") {
          return yield* Effect.fail(
            Errors.network(
              provider,
              request.model,
              new Error(`malformed chat completion body: ${completion.left.message}`)
            )
          )
        }
        const choice = completion.right.choices[0]
        const content: Array<LlmClient.ContentBlock> = []
        if (choice.message.content) content.push({ type: "text", text: choice.message.content })
        for (const call of choice.message.tool_calls ?? []) {
          content.push({
            type: "tool_use",
            id: call.id,
            name: call.function.name,
            input: parseArguments(call.function.arguments)
          })
        }
        const answer = {
          id: completion.right.id,
          model: completion.right.model,
          content,
          stopReason: toStopReason(choice.finish_reason),
          usage: toUsage(completion.right.usage),
          rateLimits
        } satisfies LlmClient.Response
        // Who sent a native body gets the completion back as the API returned it, every field of it.
        return request.native?.api === api ? { ...answer, native: { api, body } } : answer
      }).pipe(Effect.scoped, Effect.withSpan("OpenAiCompatible.complete", { attributes: { model: request.model } }))

    /**
     * Server-sent chunks as they come (`stream: true`, with `stream_options:
     * { include_usage: true }` so the last chunk carries the usage): text
     * deltas at once, tool calls when their arguments are whole, `Done` with the
     * usage. A server that sends no usage chunk ends without `Done`, and the
     * admission path charges the call's worst case.
     */
    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.ProviderError> =>
      Stream.unwrapScoped(Effect.gen(function*() {
        const { rateLimits, response } = yield* send(request.model, {
          ...bodyOf(request),
          stream: true,
          stream_options: { include_usage: true }
        })
        const speaksNative = request.native?.api === api
        return response.stream.pipe(
          Stream.mapError((error) => Errors.network(provider, request.model, error)),
          Stream.decodeText(),
          Stream.splitLines,
          Stream.filterMap((line) => {
            const data = line.startsWith("data:") ? line.slice(5).trim() : ""
            return data === "" || data === "[DONE]" ? Option.none() : Option.some(data)
          }),
          Stream.mapEffect((data) => {
            const chunk = decodeChunk(data)
            return chunk._tag === "Right" ? Effect.succeed(chunk.right) : Effect.fail(
              Errors.network(provider, request.model, new Error(`malformed chat completion chunk: ${data}`))
            )
          }),
          Stream.mapAccum(initialChunks(), (acc, chunk) => {
            const events = accumulateChunk(acc, chunk.parsed, rateLimits)
            return [
              acc,
              speaksNative ? [{ _tag: "Native", event: { api, body: chunk.raw } } as const, ...events] : events
            ] as const
          }),
          Stream.flattenIterables
        )
      }))

    return { provider, complete, stream }
  })

/**
 * `LlmClient` over the `HttpClient` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<LlmClient.LlmClient, never, HttpClient.HttpClient> =>
  Layer.effect(LlmClient.LlmClient, Effect.map(make(options), LlmClient.LlmClient.of))

/**
 * The configuration read by {@link layerConfig}: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const config: Config.Config<Options> = Config.all({
  apiKey: Config.redacted("OPENAI_API_KEY"),
  baseURL: Config.string("OPENAI_BASE_URL").pipe(Config.withDefault("https://api.openai.com/v1"))
})

/**
 * `LlmClient` from `OPENAI_API_KEY` and `OPENAI_BASE_URL` (or another `Config` of options).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options> = config
): Layer.Layer<LlmClient.LlmClient, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.unwrapEffect(Effect.map(options, layer))
