/**
 * A provider simulator: an HTTP server that speaks the Anthropic Messages API
 * and OpenAI chat completions, enforces per-key token-bucket quotas the way
 * the providers describe them, sends their real rate-limit headers and error
 * bodies, and injects faults — so that clients, tests and benchmarks run
 * without the internet. The unchanged `@anthropic-ai/sdk` works against it:
 * `new Anthropic({ baseURL: running.url, apiKey: "sim-key" })`.
 *
 * Endpoints: `POST /v1/messages` (also `stream: true`, as server-sent events),
 * `POST /v1/messages/count_tokens`, `POST /v1/chat/completions` (also
 * `stream: true`, as server-sent chunks, the usage last with
 * `stream_options: { include_usage: true }`),
 * `GET /_sim/stats`, `POST /_sim/reset`.
 *
 * - Quotas per API key and model: requests, input tokens and output tokens per
 *   minute (capacity one minute's worth, continuous refill). A call is admitted
 *   when a request, its input and some output are there; output is charged
 *   after the answer, as real providers do. OpenAI's endpoint uses one combined
 *   tokens bucket (input + `max_tokens`).
 * - Prompt caching as the Messages API does it: a block marked
 *   `cache_control: { type: "ephemeral" }` (in `tools`, `system` or a
 *   message's content) caches the prefix up to and including it, per API key
 *   and model, for 5 simulated minutes refreshed by each read (`promptCache`).
 *   The first call writes (`cache_creation_input_tokens`), later calls with the
 *   same prefix read (`cache_read_input_tokens`), the rest is `input_tokens`.
 *   The input-token limit charges plain input and writes, not reads. A prefix
 *   shorter than `promptCache.minimumTokens` (1,024) is not cached; more than
 *   four marked blocks is a 400.
 * - Tokens are counted by the simulator's own rule ({@link countTokens}), not
 *   tiktoken's, and answers vary in length, so no client is exact by accident.
 * - Answers are deterministic: a tool-use request gets a tool call whose input
 *   fills the tool's JSON schema from the document (title, summary, keywords,
 *   category, sentiment, …).
 * - `timeScale: 60` makes a simulated minute last one real second: refill rates
 *   are scaled, and `retry-after` and reset headers are in real time. The
 *   `-limit` headers still state per-minute numbers, so a client must be told
 *   the scaled quota.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Simulator } from "@sluice/simulator"
 *
 * Effect.scoped(Effect.gen(function*() {
 *   const running = yield* Simulator.serve({ quota: { requestsPerMinute: 50, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 } })
 *   console.log(running.url)
 * }))
 * ```
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { formatGoDuration } from "@sluice/providers/RateLimitHeaders"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createServer } from "node:http"
import * as Answers from "./internal/answers.js"
import * as Engine from "./internal/engine.js"
import * as Cache from "./internal/promptCache.js"
import * as Quotas from "./internal/quota.js"
import * as Tokens from "./internal/tokens.js"

/**
 * Limits per minute for one API key (and each model it calls).
 *
 * @since 0.1.0
 * @category models
 */
export type Quota = Quotas.Quota
/**
 * The simulated prompt cache: its lifetime in simulated seconds (300) and its minimum prefix in tokens (1,024).
 *
 * @since 0.1.0
 * @category models
 */
export type PromptCache = Cache.PromptCache
/**
 * Fault injection; every rate is a probability per request. Off by default.
 *
 * @since 0.1.0
 * @category models
 */
export type Faults = Engine.Faults
/**
 * Latency added to every answer: base + per output token + uniform jitter, in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export type Latency = Engine.Latency

/**
 * How the simulator runs. Every field has a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config extends Engine.EngineConfig {
  /** Default 127.0.0.1. */
  readonly host?: string | undefined
  /** Default 0: a free port. */
  readonly port?: number | undefined
}

/**
 * What the simulator counted for one API key and model.
 *
 * @since 0.1.0
 * @category models
 */
export type KeyStats = Engine.KeyStats

/**
 * Everything the simulator counted.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly keys: ReadonlyArray<KeyStats>
}

/**
 * A running simulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Running {
  /** e.g. `http://127.0.0.1:54321` — the SDK's `baseURL`. */
  readonly url: string
  readonly port: number
  readonly stats: Effect.Effect<Stats>
  /** Clears the counts and refills every bucket. */
  readonly reset: Effect.Effect<void>
}

/**
 * The simulator could not start.
 *
 * @since 0.1.0
 * @category errors
 */
export class SimulatorError
  extends Data.TaggedError("SimulatorError")<{ readonly reason: string; readonly cause?: unknown }>
{
  override get message(): string {
    return `Simulator: ${this.reason}`
  }
}

/**
 * The running simulator, as a service.
 *
 * @since 0.1.0
 * @category services
 */
export class Simulator extends Context.Tag("@sluice/simulator/Simulator")<Simulator, Running>() {}

/**
 * The simulator's own input-token count of a request body (Anthropic or OpenAI shape).
 *
 * @since 0.1.0
 * @category utilities
 */
export const countTokens: (body: unknown) => number = Tokens.countTokens

/**
 * Anthropic's tier-1 Sonnet limits, the default quota: 50 requests, 30,000 input and 8,000 output tokens a minute.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultQuota: Quota = Quotas.defaultQuota

// ---------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------

let requestCounter = 0
const newId = (prefix: string) => `${prefix}_sim${(++requestCounter).toString(36).padStart(8, "0")}`

const anthropicHeaders = (views: Quotas.Views, now: number): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (
    const [name, dimension] of [["requests", "requests"], ["input-tokens", "inputTokens"], [
      "output-tokens",
      "outputTokens"
    ]] as const
  ) {
    const view = views[dimension]
    headers[`anthropic-ratelimit-${name}-limit`] = String(view.limit)
    headers[`anthropic-ratelimit-${name}-remaining`] = String(view.remaining)
    headers[`anthropic-ratelimit-${name}-reset`] = new Date(now + view.fullAfterMs).toISOString().replace(
      /\.\d{3}Z$/,
      "Z"
    )
  }
  return headers
}

const openAiHeaders = (views: Quotas.Views): Record<string, string> => ({
  "x-ratelimit-limit-requests": String(views.requests.limit),
  "x-ratelimit-remaining-requests": String(views.requests.remaining),
  "x-ratelimit-reset-requests": formatGoDuration(Duration.millis(views.requests.fullAfterMs)),
  "x-ratelimit-limit-tokens": String(views.tokens.limit),
  "x-ratelimit-remaining-tokens": String(views.tokens.remaining),
  "x-ratelimit-reset-tokens": formatGoDuration(Duration.millis(views.tokens.fullAfterMs))
})

const anthropicError = (status: number, type: string, message: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ type: "error", error: { type, message } }, {
    status,
    headers: { "request-id": newId("req"), ...headers }
  })

const openAiError = (
  status: number,
  type: string,
  code: string | null,
  message: string,
  headers: Record<string, string> = {}
) =>
  HttpServerResponse.unsafeJson({ error: { message, type, param: null, code } }, {
    status,
    headers: { "x-request-id": newId("req"), ...headers }
  })

const dimensionWords: Record<Quotas.Dimension, string> = {
  requests: "requests",
  inputTokens: "input tokens",
  outputTokens: "output tokens",
  tokens: "tokens"
}

const readJson = Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => request.json)

/** The field that is missing or wrong, or undefined when the body is usable. */
const invalidField = (body: unknown, needsMaxTokens: boolean): string | undefined => {
  if (typeof body !== "object" || body === null) return "body"
  const record = body as Record<string, unknown>
  if (typeof record.model !== "string" || record.model === "") return "model"
  if (!Array.isArray(record.messages) || record.messages.length === 0) return "messages"
  if (
    needsMaxTokens &&
    (typeof record.max_tokens !== "number" || !Number.isInteger(record.max_tokens) || record.max_tokens < 1)
  ) return "max_tokens"
  return undefined
}

const destroySocket = Effect.flatMap(
  HttpServerRequest.HttpServerRequest,
  (request) => Effect.sync(() => NodeHttpServerRequest.toIncomingMessage(request).socket.destroy())
)

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/** The API key: `x-api-key` (the API's documented header) or `Authorization: Bearer …` (what SDK 1.x sends). */
const anthropicKey = Effect.map(HttpServerRequest.HttpServerRequest, (request): string | undefined => {
  const key = request.headers["x-api-key"]
  if (key !== undefined && key !== "") return key
  const bearer = (request.headers["authorization"] ?? "").replace(/^Bearer\b\s*/i, "").trim()
  return bearer === "" ? undefined : bearer
})

const messages = (engine: Engine.Engine) =>
  Effect.gen(function*() {
    const apiKey = yield* anthropicKey
    if (apiKey === undefined || apiKey === "") {
      return anthropicError(401, "authentication_error", "x-api-key header (or Authorization: Bearer) is required")
    }
    const body = yield* Effect.catchAll(readJson, () => Effect.succeed<unknown>(undefined))
    const invalid = invalidField(body, true)
    if (invalid !== undefined) {
      return anthropicError(
        400,
        "invalid_request_error",
        invalid === "body" ? "The request body is not valid JSON" : `${invalid}: Field required or invalid`
      )
    }
    const request = body as Answers.MessagesBody
    const fault = yield* engine.fault(apiKey, request.model)
    const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    switch (fault) {
      case "overloaded":
        return anthropicError(529, "overloaded_error", "Overloaded")
      case "server-error":
        return anthropicError(500, "api_error", "Internal server error")
      case "rate-limited":
        return anthropicError(429, "rate_limit_error", "Rate limited (injected burst)", {
          "retry-after": "1",
          ...anthropicHeaders(yield* engine.views(apiKey, request.model), now)
        })
      case "reset": {
        yield* destroySocket
        return HttpServerResponse.empty({ status: 500 })
      }
      default:
        break
    }
    const breakpoints = Cache.countBreakpoints(request)
    if (breakpoints > Cache.maxBreakpoints) {
      return anthropicError(
        400,
        "invalid_request_error",
        `A maximum of ${Cache.maxBreakpoints} blocks with cache_control may be provided. Found ${breakpoints}.`
      )
    }
    const inputTokens = Tokens.countTokens(request)
    const admission = yield* engine.admit(
      apiKey,
      request.model,
      inputTokens,
      "anthropic",
      request.max_tokens,
      Cache.cachePrefixes(request)
    )
    if (admission._tag === "Limited") {
      return anthropicError(
        429,
        "rate_limit_error",
        `This request would exceed the rate limit for your organization of ${admission.limit.toLocaleString("en-US")} ${
          dimensionWords[admission.dimension]
        } per minute. Please reduce the prompt length or the maximum tokens requested, or try again later.`,
        { "retry-after": String(Math.ceil(admission.retryAfterMs / 1000)), ...anthropicHeaders(admission.views, now) }
      )
    }
    const answer = Answers.answerFor(request)
    yield* engine.latency(answer.outputTokens)
    const views = yield* engine.finish(apiKey, request.model, answer.outputTokens, "anthropic")
    const headers = {
      "request-id": newId("req"),
      ...anthropicHeaders(views, yield* Effect.clockWith((clock) => clock.currentTimeMillis))
    }
    const id = newId("msg")
    const content = answer.kind === "tool"
      ? [{ type: "tool_use", id: newId("toolu"), name: answer.tool, input: answer.input }]
      : [{ type: "text", text: answer.text }]
    const usage = {
      input_tokens: admission.usage.inputTokens,
      output_tokens: answer.outputTokens,
      cache_creation_input_tokens: admission.usage.cacheWriteInputTokens,
      cache_read_input_tokens: admission.usage.cacheReadInputTokens
    }
    if (fault === "malformed") {
      return HttpServerResponse.text(`{"id":"${id}","type":"message","content":[{"type":"te`, {
        status: 200,
        headers,
        contentType: "application/json"
      })
    }
    if (request.stream === true) {
      return HttpServerResponse.stream(sse(id, request.model, content, usage, answer.stop), {
        contentType: "text/event-stream",
        headers
      })
    }
    return HttpServerResponse.unsafeJson({
      id,
      type: "message",
      role: "assistant",
      model: request.model,
      content,
      stop_reason: answer.stop,
      stop_sequence: null,
      usage
    }, { headers })
  })

/** The Messages API's event stream for an answer. */
const sse = (
  id: string,
  model: string,
  content: ReadonlyArray<Record<string, unknown>>,
  usage: { readonly input_tokens: number; readonly output_tokens: number },
  stop: string
): Stream.Stream<Uint8Array> => {
  const events: Array<readonly [string, unknown]> = [[
    "message_start",
    {
      type: "message_start",
      message: {
        id,
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: 1 }
      }
    }
  ]]
  content.forEach((block, index) => {
    if (block.type === "text") {
      events.push(["content_block_start", {
        type: "content_block_start",
        index,
        content_block: { type: "text", text: "" }
      }])
      const words = String(block.text).match(/\S+\s*/g) ?? []
      for (let i = 0; i < words.length; i += 4) {
        events.push(["content_block_delta", {
          type: "content_block_delta",
          index,
          delta: { type: "text_delta", text: words.slice(i, i + 4).join("") }
        }])
      }
    } else {
      events.push(["content_block_start", {
        type: "content_block_start",
        index,
        content_block: { type: "tool_use", id: block.id, name: block.name, input: {} }
      }])
      const json = JSON.stringify(block.input)
      for (let i = 0; i < json.length; i += 40) {
        events.push(["content_block_delta", {
          type: "content_block_delta",
          index,
          delta: { type: "input_json_delta", partial_json: json.slice(i, i + 40) }
        }])
      }
    }
    events.push(["content_block_stop", { type: "content_block_stop", index }])
  })
  events.push(["message_delta", {
    type: "message_delta",
    delta: { stop_reason: stop, stop_sequence: null },
    usage: { output_tokens: usage.output_tokens }
  }])
  events.push(["message_stop", { type: "message_stop" }])
  const encoder = new TextEncoder()
  return Stream.fromIterable(
    events.map(([event, data]) => encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`))
  )
}

const countTokensHandler = Effect.gen(function*() {
  const apiKey = yield* anthropicKey
  if (apiKey === undefined || apiKey === "") {
    return anthropicError(401, "authentication_error", "x-api-key header (or Authorization: Bearer) is required")
  }
  const body = yield* Effect.catchAll(readJson, () => Effect.succeed<unknown>(undefined))
  const invalid = invalidField(body, false)
  if (invalid !== undefined) {
    return anthropicError(400, "invalid_request_error", `${invalid}: Field required or invalid`)
  }
  return HttpServerResponse.unsafeJson({ input_tokens: Tokens.countTokens(body) })
})

const chatCompletions = (engine: Engine.Engine) =>
  Effect.gen(function*() {
    const authorization = (yield* HttpServerRequest.HttpServerRequest).headers["authorization"] ?? ""
    const apiKey = authorization.replace(/^Bearer\b\s*/i, "").trim() ||
      (yield* HttpServerRequest.HttpServerRequest).headers["api-key"] || ""
    if (apiKey === "") {
      return openAiError(401, "invalid_request_error", "invalid_api_key", "You didn't provide an API key.")
    }
    const raw = yield* Effect.catchAll(readJson, () => Effect.succeed<unknown>(undefined))
    const record = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>
    const maxTokens = typeof record.max_tokens === "number"
      ? record.max_tokens
      : typeof record.max_completion_tokens === "number"
      ? record.max_completion_tokens
      : 1_024
    const invalid = invalidField(raw, false)
    if (invalid !== undefined) {
      return openAiError(400, "invalid_request_error", null, `'${invalid}' is a required property`)
    }
    const messagesIn = record.messages as ReadonlyArray<{ role: string; content: unknown }>
    const request: Answers.MessagesBody = {
      model: record.model as string,
      max_tokens: maxTokens,
      messages: messagesIn.filter((message) => message.role !== "system"),
      system: messagesIn.filter((message) => message.role === "system").map((message) =>
        Tokens.contentText(message.content)
      ).join("\n"),
      ...(Array.isArray(record.tools)
        ? {
          tools: (record.tools as ReadonlyArray<{ function?: { name?: string; parameters?: unknown } }>).map((
            tool
          ) => ({
            name: tool.function?.name ?? "tool",
            input_schema: tool.function?.parameters
          }))
        }
        : {}),
      tool_choice: record.tool_choice === "required" ? { type: "any" } : record.tool_choice
    }
    const fault = yield* engine.fault(apiKey, request.model)
    switch (fault) {
      case "overloaded":
      case "server-error":
        return openAiError(
          fault === "overloaded" ? 503 : 500,
          "server_error",
          null,
          "The server had an error while processing your request."
        )
      case "rate-limited":
        return openAiError(429, "requests", "rate_limit_exceeded", "Rate limit reached (injected burst).", {
          "retry-after": "1"
        })
      case "reset": {
        yield* destroySocket
        return HttpServerResponse.empty({ status: 500 })
      }
      default:
        break
    }
    const inputTokens = Tokens.countTokens({
      system: request.system,
      messages: messagesIn.filter((m) => m.role !== "system"),
      tools: record.tools
    })
    const admission = yield* engine.admit(apiKey, request.model, inputTokens, "openai", maxTokens)
    if (admission._tag === "Limited") {
      const kind = admission.dimension === "requests" ? "requests" : "tokens"
      return openAiError(
        429,
        kind,
        "rate_limit_exceeded",
        `Rate limit reached for ${request.model} on ${kind} per min (RPM/TPM): Limit ${admission.limit}. Please try again in ${
          formatGoDuration(Duration.millis(admission.retryAfterMs))
        }.`,
        {
          "retry-after": String(Math.ceil(admission.retryAfterMs / 1000)),
          "retry-after-ms": String(admission.retryAfterMs),
          ...openAiHeaders(admission.views)
        }
      )
    }
    const answer = Answers.answerFor(request)
    yield* engine.latency(answer.outputTokens)
    const views = yield* engine.finish(apiKey, request.model, answer.outputTokens, "openai")
    const headers = { "x-request-id": newId("req"), ...openAiHeaders(views) }
    if (fault === "malformed") {
      return HttpServerResponse.text(`{"id":"chatcmpl`, { headers, contentType: "application/json" })
    }
    const message = answer.kind === "tool"
      ? {
        role: "assistant",
        content: null,
        tool_calls: [{
          id: newId("call"),
          type: "function",
          function: { name: answer.tool, arguments: JSON.stringify(answer.input) }
        }]
      }
      : { role: "assistant", content: answer.text }
    const id = newId("chatcmpl")
    const created = Math.floor((yield* Effect.clockWith((clock) => clock.currentTimeMillis)) / 1000)
    const finishReason = answer.kind === "tool" ? "tool_calls" : answer.stop === "max_tokens" ? "length" : "stop"
    const usage = {
      prompt_tokens: inputTokens,
      completion_tokens: answer.outputTokens,
      total_tokens: inputTokens + answer.outputTokens
    }
    if (record.stream === true) {
      const options = record.stream_options
      const includeUsage = typeof options === "object" && options !== null &&
        (options as { readonly include_usage?: unknown }).include_usage === true
      return HttpServerResponse.stream(
        chunks({ id, created, model: request.model, message, finishReason, usage: includeUsage ? usage : undefined }),
        { contentType: "text/event-stream", headers }
      )
    }
    return HttpServerResponse.unsafeJson({
      id,
      object: "chat.completion",
      created,
      model: request.model,
      choices: [{ index: 0, message, finish_reason: finishReason }],
      usage
    }, { headers })
  })

/**
 * Chat completions' server-sent chunks for an answer (`stream: true`): the
 * role, the text a few words at a time or each tool call's arguments in
 * pieces, the finish reason, then (with `stream_options.include_usage`) a
 * last chunk with no choices and the usage, and `data: [DONE]`.
 */
const chunks = (answer: {
  readonly id: string
  readonly created: number
  readonly model: string
  readonly message: {
    readonly content: string | null
    readonly tool_calls?: ReadonlyArray<
      { readonly id: string; readonly function: { readonly name: string; readonly arguments: string } }
    >
  }
  readonly finishReason: string
  readonly usage: Record<string, number> | undefined
}): Stream.Stream<Uint8Array> => {
  const chunk = (delta: Record<string, unknown>, finishReason: string | null = null) => ({
    id: answer.id,
    object: "chat.completion.chunk",
    created: answer.created,
    model: answer.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...(answer.usage === undefined ? {} : { usage: null })
  })
  const out: Array<unknown> = [chunk({ role: "assistant", content: "" })]
  const words = answer.message.content?.match(/\S+\s*/g) ?? []
  for (let i = 0; i < words.length; i += 4) out.push(chunk({ content: words.slice(i, i + 4).join("") }))
  answer.message.tool_calls?.forEach((call, index) => {
    out.push(chunk({
      tool_calls: [{ index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }]
    }))
    for (let i = 0; i < call.function.arguments.length; i += 40) {
      out.push(chunk({ tool_calls: [{ index, function: { arguments: call.function.arguments.slice(i, i + 40) } }] }))
    }
  })
  out.push(chunk({}, answer.finishReason))
  if (answer.usage !== undefined) {
    out.push({
      id: answer.id,
      object: "chat.completion.chunk",
      created: answer.created,
      model: answer.model,
      choices: [],
      usage: answer.usage
    })
  }
  const encoder = new TextEncoder()
  return Stream.fromIterable([
    ...out.map((data) => encoder.encode(`data: ${JSON.stringify(data)}\n\n`)),
    encoder.encode("data: [DONE]\n\n")
  ])
}

/**
 * The simulator's routes over an engine.
 *
 * @since 0.1.0
 * @category utilities
 */
export const router = (engine: Engine.Engine) =>
  HttpRouter.empty.pipe(
    HttpRouter.post("/v1/messages", messages(engine)),
    HttpRouter.post("/v1/messages/count_tokens", countTokensHandler),
    HttpRouter.post("/v1/chat/completions", chatCompletions(engine)),
    HttpRouter.get("/_sim/stats", Effect.map(engine.stats, (stats) => HttpServerResponse.unsafeJson(stats))),
    HttpRouter.post("/_sim/reset", Effect.as(engine.reset, HttpServerResponse.empty({ status: 204 })))
  )

/**
 * Starts the simulator; it stops when the scope closes.
 *
 * @since 0.1.0
 * @category utilities
 */
export const serve = (config: Config = {}): Effect.Effect<Running, SimulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const engine = yield* Engine.make(config)
    const host = config.host ?? "127.0.0.1"
    const context = yield* Layer.build(NodeHttpServer.layer(() => createServer(), { port: config.port ?? 0, host }))
      .pipe(
        Effect.mapError((cause) =>
          new SimulatorError({ reason: `cannot listen on ${host}:${config.port ?? 0}`, cause })
        )
      )
    const server = Context.get(context, HttpServer.HttpServer)
    yield* server.serve(
      HttpRouter.toHttpApp(router(engine)).pipe(
        Effect.flatten,
        Effect.catchAll(() =>
          Effect.succeed(
            HttpServerResponse.unsafeJson({ type: "error", error: { type: "not_found_error", message: "Not found" } }, {
              status: 404
            })
          )
        )
      )
    )
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : 0
    return { url: `http://${host}:${port}`, port, stats: engine.stats, reset: engine.reset }
  })

/**
 * The simulator as a layer, for a whole test suite or program.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config = {}): Layer.Layer<Simulator, SimulatorError> =>
  Layer.scoped(Simulator, serve(config))
