/**
 * The provider-neutral model client: one request shape, one response shape,
 * one error union. Providers (`@sluice/providers`) implement it; the Governor
 * wraps it and is itself an `LlmClient`.
 *
 * Core holds the interface only; nothing here imports a provider SDK.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LlmClient } from "@sluice/core"
 *
 * const ask = Effect.gen(function*() {
 *   const client = yield* LlmClient.LlmClient
 *   const response = yield* client.complete({
 *     model: "claude-haiku-4-5",
 *     messages: [{ role: "user", content: "Say hi" }],
 *     maxOutputTokens: 64
 *   })
 *   return LlmClient.text(response)
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type * as Cost from "./Cost.js"
import type * as Priority from "./Priority.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"
import * as SluiceError from "./SluiceError.js"
import type { CallError, ProviderError } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/**
 * Plain text. `cacheControl` marks a prompt-cache breakpoint (Anthropic).
 *
 * @since 0.1.0
 * @category models
 */
export interface TextBlock {
  readonly type: "text"
  readonly text: string
  readonly cacheControl?: { readonly type: "ephemeral" } | undefined
}

/**
 * The model asks for a tool to be called.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToolUseBlock {
  readonly type: "tool_use"
  readonly id: string
  readonly name: string
  readonly input: unknown
}

/**
 * The caller answers a tool call.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToolResultBlock {
  readonly type: "tool_result"
  readonly toolUseId: string
  readonly content: string
  readonly isError?: boolean | undefined
}

/**
 * One block of a message.
 *
 * @since 0.1.0
 * @category models
 */
export type ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock

/**
 * One turn of the conversation.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly role: "user" | "assistant"
  readonly content: string | ReadonlyArray<ContentBlock>
}

/**
 * A tool the model may call; `inputSchema` is a JSON Schema object.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tool {
  readonly name: string
  readonly description?: string | undefined
  readonly inputSchema: { readonly type: "object"; readonly [key: string]: unknown }
}

/**
 * How the model must use tools.
 *
 * @since 0.1.0
 * @category models
 */
export type ToolChoice =
  | { readonly type: "auto" }
  | { readonly type: "any" }
  | { readonly type: "tool"; readonly name: string }
  | { readonly type: "none" }

/**
 * What Sluice needs to know about a call besides the call itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestMetadata {
  /** The tenant whose quota and budget the call counts against. */
  readonly tenant?: string | undefined
  /** The class the call waits in. */
  readonly priority?: Priority.Class | undefined
  /** The document the call is about, for errors and reports. */
  readonly documentId?: string | undefined
  /** The job the call belongs to, for per-job budgets. */
  readonly job?: string | undefined
  /**
   * Calls with the same sticky key stay on one deployment of a `Router` pool
   * while it is healthy and admits them soon, so the provider's prompt cache
   * keeps hitting (a conversation id, a document's shared prefix).
   */
  readonly stickyKey?: string | undefined
  /** Give up with `RateLimiter.WaitTimeout` when the limiter has not admitted the call within this long. Default: no deadline. */
  readonly maxWait?: Duration.DurationInput | undefined
}

/**
 * A provider's own request or response object, tagged with the API it speaks
 * (`"anthropic"`: the Messages API). Core never reads `body`; a provider that
 * speaks `api` does.
 *
 * @since 0.1.0
 * @category models
 */
export interface Native {
  readonly api: string
  readonly body: unknown
}

/**
 * A model call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly model: string
  readonly system?: string | undefined
  /**
   * Marks the end of the system prompt as a prompt-cache breakpoint (Anthropic's
   * `cache_control` on the system block): the tools and the system prompt are
   * cached as one prefix. Message blocks mark theirs with `TextBlock.cacheControl`.
   */
  readonly systemCacheControl?: { readonly type: "ephemeral" } | undefined
  readonly messages: ReadonlyArray<Message>
  readonly tools?: ReadonlyArray<Tool> | undefined
  readonly toolChoice?: ToolChoice | undefined
  /** `max_tokens`: the most the model may write, and what the limiter reserves for output. */
  readonly maxOutputTokens: number
  readonly temperature?: number | undefined
  readonly stopSequences?: ReadonlyArray<string> | undefined
  readonly metadata?: RequestMetadata | undefined
  /**
   * The provider-native request this call was translated from (the Promise
   * facade's SDK params). A provider that speaks `native.api` sends `body` as
   * it is, with the `model` of this request (a fallback rung's), and returns
   * its own response as `Response.native`; any other provider sends the
   * translation above. Sluice estimates, keys and budgets the call by the
   * translation only: the two must describe the same call.
   */
  readonly native?: Native | undefined
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/**
 * What the provider counted for one call. Input is split as providers bill it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  /** Input tokens not read from or written to the prompt cache. */
  readonly inputTokens: number
  readonly outputTokens: number
  /** Input tokens read from the prompt cache. */
  readonly cacheReadInputTokens: number
  /** Input tokens written to the prompt cache. */
  readonly cacheWriteInputTokens: number
}

/**
 * Why the model stopped.
 *
 * @since 0.1.0
 * @category models
 */
export type StopReason = "end_turn" | "max_tokens" | "stop_sequence" | "tool_use" | "refusal" | "other"

/**
 * A model's answer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Response {
  readonly id: string
  /** The model that answered (a fallback may differ from the one asked). */
  readonly model: string
  readonly content: ReadonlyArray<ContentBlock>
  readonly stopReason: StopReason
  readonly usage: Usage
  /** What the response's headers said about the quota. */
  readonly rateLimits: RateLimitSnapshot
  /** The provider's own response object, when the request's `native` body was sent (see `Request.native`). */
  readonly native?: Native | undefined
}

/**
 * The text of a response, its text blocks joined.
 *
 * @since 0.1.0
 * @category utilities
 */
export const text = (response: Response): string =>
  response.content.flatMap((block) => block.type === "text" ? [block.text] : []).join("")

/**
 * The tool calls of a response.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toolCalls = (response: Response): ReadonlyArray<ToolUseBlock> =>
  response.content.filter((block): block is ToolUseBlock => block.type === "tool_use")

/**
 * One event of a streamed answer. The stream ends with `Done`, which carries the usage.
 *
 * `Native` carries one of the provider's own stream events (an Anthropic
 * `RawMessageStreamEvent`, an OpenAI `ChatCompletionChunk`), before the events
 * it completes; a provider sends them only to a request whose `native` body it
 * speaks (see `Request.native`), so other consumers never see one.
 *
 * @since 0.1.0
 * @category models
 */
export type StreamEvent =
  | { readonly _tag: "TextDelta"; readonly text: string }
  | { readonly _tag: "ToolCall"; readonly call: ToolUseBlock }
  | { readonly _tag: "Done"; readonly response: Response }
  | { readonly _tag: "Native"; readonly event: Native }

/**
 * Whether a request marks a prompt-cache breakpoint (`systemCacheControl`, or `cacheControl` on a block).
 *
 * @since 0.1.0
 * @category utilities
 */
export const marksCache = (request: Request): boolean =>
  request.systemCacheControl !== undefined ||
  request.messages.some((message) =>
    typeof message.content !== "string" &&
    message.content.some((block) => block.type === "text" && block.cacheControl !== undefined)
  )

/**
 * The most a call whose input is estimated at `inputTokens` may have used when
 * its answer never came (a timeout, a reset, an interruption): all of its
 * output, and its input as plain input, or as cache writes (the dearer price)
 * when the request marks the cache.
 *
 * @since 0.1.0
 * @category utilities
 */
export const worstCaseUsage = (request: Request, inputTokens: number): Usage =>
  marksCache(request)
    ? {
      inputTokens: 0,
      outputTokens: request.maxOutputTokens,
      cacheReadInputTokens: 0,
      cacheWriteInputTokens: inputTokens
    }
    : { inputTokens, outputTokens: request.maxOutputTokens, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }

/**
 * What a call costs the quota, from the usage the provider reported: one
 * request, its output, and the input that counts against the input-token
 * limits — uncached input always, cache reads unless `cacheReadsCount` is
 * false, cache writes unless `cacheWritesCount` is false. The rule of a
 * provider and model is data: `Quota.cacheCountingFor(table, provider, model)`.
 *
 * @example
 * ```ts
 * import { LlmClient, Quota } from "@sluice/core"
 *
 * const usage = { inputTokens: 40, cacheReadInputTokens: 2_000, cacheWriteInputTokens: 0, outputTokens: 120 }
 * LlmClient.usageCost(usage, Quota.cacheCountingFor(Quota.defaultCacheCounting, "anthropic", "claude-sonnet-4-5"))
 * // { requests: 1, inputTokens: 40, outputTokens: 120 }: Anthropic does not count cache reads against ITPM
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const usageCost = (
  usage: Usage,
  counting: { readonly cacheReadsCount?: boolean | undefined; readonly cacheWritesCount?: boolean | undefined } = {}
): Cost.Cost => ({
  requests: 1,
  inputTokens: usage.inputTokens +
    (counting.cacheWritesCount === false ? 0 : usage.cacheWriteInputTokens) +
    (counting.cacheReadsCount === false ? 0 : usage.cacheReadInputTokens),
  outputTokens: usage.outputTokens
})

// ---------------------------------------------------------------------------
// Errors: defined in `SluiceError`, the bottom of core, and named here as the contract's
// ---------------------------------------------------------------------------

/**
 * The provider errors and the unions of the contract. They are defined in
 * `SluiceError`, which imports no layer above the contract, so that naming the
 * governance errors here imports neither the limiter, nor the breaker, nor the
 * budget; the docs are on the definitions.
 */
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  BadRequest,
  /**
   * @since 0.1.0
   * @category errors
   */
  NetworkError,
  /**
   * @since 0.1.0
   * @category errors
   */
  NotFound,
  /**
   * @since 0.1.0
   * @category errors
   */
  Overloaded,
  /**
   * @since 0.1.0
   * @category errors
   */
  QuotaExhausted,
  /**
   * @since 0.1.0
   * @category errors
   */
  RateLimited,
  /**
   * @since 0.1.0
   * @category errors
   */
  ServerError,
  /**
   * @since 0.1.0
   * @category errors
   */
  Timeout,
  /**
   * @since 0.1.0
   * @category errors
   */
  Unauthorized
} from "./SluiceError.js"
export type {
  /**
   * @since 0.1.0
   * @category errors
   */
  CallError,
  /**
   * @since 0.1.0
   * @category errors
   */
  GovernanceError,
  /**
   * @since 0.1.0
   * @category errors
   */
  ProviderError,
  /**
   * @since 0.1.0
   * @category errors
   */
  ProviderErrorFields
} from "./SluiceError.js"

/**
 * Whether an error may be retried (`x-should-retry` wins over the status): `SluiceError.classify(error).retryable`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isRetryable = (error: ProviderError): boolean => SluiceError.classify(error).retryable

/**
 * Whether a failed call may have run at the provider, and so be billed: a
 * timeout or a lost connection may have (the request may have arrived); a
 * refusal (429, 529, 5xx, 4xx, a billing error) was answered without running.
 * The admission path charges a call's worst case only when this holds.
 * `SluiceError.classify(error).mayHaveRun`.
 *
 * @since 0.1.0
 * @category utilities
 */
export const mayHaveRun = (error: ProviderError): boolean => SluiceError.classify(error).mayHaveRun

// ---------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------

/**
 * A model client whose calls fail with `E`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client<E> {
  /** The provider's name, as errors report it. */
  readonly provider: string
  /** One call, whole. */
  readonly complete: (request: Request) => Effect.Effect<Response, E>
  /** One call, streamed; the stream ends with `Done` carrying the usage. */
  readonly stream: (request: Request) => Stream.Stream<StreamEvent, E>
  /** The provider's own count of a request's input tokens, where it offers one. */
  readonly countTokens?: ((request: Request) => Effect.Effect<number, E>) | undefined
}

/**
 * What a provider layer builds: a client whose calls fail only with `ProviderError`.
 *
 * @since 0.1.0
 * @category models
 */
export type Provider = Client<ProviderError>

/**
 * A model client. Providers implement it (failing with `ProviderError` only);
 * the Governor wraps one and is one (adding `GovernanceError`s).
 *
 * @since 0.1.0
 * @category errors
 */
export class LlmClient extends Context.Tag("@sluice/core/LlmClient")<LlmClient, Client<CallError>>() {}
