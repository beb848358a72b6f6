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
 * Streaming: `stream` makes one whole call and emits its text, tool calls and
 * `Done`; incremental server-sent chunks are not read yet.
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
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
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
  usage: Schema.optional(Schema.Struct({
    prompt_tokens: Schema.Number,
    completion_tokens: Schema.Number,
    prompt_tokens_details: Schema.optional(
      Schema.NullOr(Schema.Struct({ cached_tokens: Schema.optional(Schema.Number) }))
    )
  }))
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

    const complete = (request: LlmClient.Request): Effect.Effect<LlmClient.Response, LlmClient.ProviderError> =>
      Effect.gen(function*() {
        const base = HttpClientRequest.post(url).pipe(
          options.auth === "api-key"
            ? HttpClientRequest.setHeader("api-key", Redacted.value(options.apiKey))
            : HttpClientRequest.bearerToken(options.apiKey),
          HttpClientRequest.setUrlParams(options.query ?? {}),
          HttpClientRequest.bodyUnsafeJson(toBody(request))
        )
        const response = yield* http.execute(base).pipe(
          Effect.timeoutFail({
            duration: timeoutAfter,
            onTimeout: () => Errors.timeout(provider, request.model, timeoutAfter)
          }),
          Effect.catchTag("RequestError", (error) => Effect.fail(Errors.network(provider, request.model, error))),
          Effect.catchTag("ResponseError", (error) => Effect.fail(Errors.network(provider, request.model, error)))
        )
        const rateLimits = yield* RateLimitHeaders.read(response.headers, "auto")
        const body = yield* Effect.catchAll(
          response.json,
          (error) =>
            response.status >= 400
              ? Effect.succeed<unknown>(undefined)
              : Effect.fail(Errors.network(provider, request.model, error))
        )
        if (response.status >= 400) {
          const wire = Option.getOrUndefined(decodeErrorBody(body))
          return yield* Effect.fail(Errors.fromHttpFailure({
            provider,
            model: request.model,
            status: response.status,
            headers: response.headers,
            errorType: typeof wire?.error.code === "string" ? wire.error.code : wire?.error.type ?? undefined,
            detail: wire?.error.message ?? `HTTP ${response.status}`,
            now: yield* Clock.currentTimeMillis,
            rateLimits
          }))
        }
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
        const usage = completion.right.usage
        const cached = usage?.prompt_tokens_details?.cached_tokens ?? 0
        return {
          id: completion.right.id,
          model: completion.right.model,
          content,
          stopReason: toStopReason(choice.finish_reason),
          usage: {
            inputTokens: Math.max(0, (usage?.prompt_tokens ?? 0) - cached),
            outputTokens: usage?.completion_tokens ?? 0,
            cacheReadInputTokens: cached,
            cacheWriteInputTokens: 0
          },
          rateLimits
        } satisfies LlmClient.Response
      }).pipe(Effect.scoped, Effect.withSpan("OpenAiCompatible.complete", { attributes: { model: request.model } }))

    const stream = (request: LlmClient.Request): Stream.Stream<LlmClient.StreamEvent, LlmClient.ProviderError> =>
      Stream.flatMap(Stream.fromEffect(complete(request)), (response) =>
        Stream.fromIterable<LlmClient.StreamEvent>([
          ...response.content.map((block): LlmClient.StreamEvent =>
            block.type === "tool_use"
              ? { _tag: "ToolCall", call: block }
              : { _tag: "TextDelta", text: block.type === "text" ? block.text : "" }
          ),
          { _tag: "Done", response }
        ]))

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
