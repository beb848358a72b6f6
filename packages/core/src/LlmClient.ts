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
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type * as Cost from "./Cost.js"
import type { UnknownModel } from "./Pricing.js"
import type * as Priority from "./Priority.js"
import type * as Quota from "./Quota.js"
import type { BudgetExceeded, BudgetLedgerError } from "./Budget.js"
import type { CircuitOpen } from "./CircuitBreaker.js"
import type { AllRungsFailed } from "./Fallback.js"
import type { RateLimiterError } from "./RateLimiter.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/** Plain text. `cacheControl` marks a prompt-cache breakpoint (Anthropic). */
export interface TextBlock {
  readonly type: "text"
  readonly text: string
  readonly cacheControl?: { readonly type: "ephemeral" } | undefined
}

/** The model asks for a tool to be called. */
export interface ToolUseBlock {
  readonly type: "tool_use"
  readonly id: string
  readonly name: string
  readonly input: unknown
}

/** The caller answers a tool call. */
export interface ToolResultBlock {
  readonly type: "tool_result"
  readonly toolUseId: string
  readonly content: string
  readonly isError?: boolean | undefined
}

/** One block of a message. */
export type ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock

/** One turn of the conversation. */
export interface Message {
  readonly role: "user" | "assistant"
  readonly content: string | ReadonlyArray<ContentBlock>
}

/** A tool the model may call; `inputSchema` is a JSON Schema object. */
export interface Tool {
  readonly name: string
  readonly description?: string | undefined
  readonly inputSchema: { readonly type: "object"; readonly [key: string]: unknown }
}

/** How the model must use tools. */
export type ToolChoice =
  | { readonly type: "auto" }
  | { readonly type: "any" }
  | { readonly type: "tool"; readonly name: string }
  | { readonly type: "none" }

/** What Sluice needs to know about a call besides the call itself. */
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

/** A model call. */
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
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/** What the provider counted for one call. Input is split as providers bill it. */
export interface Usage {
  /** Input tokens not read from or written to the prompt cache. */
  readonly inputTokens: number
  readonly outputTokens: number
  /** Input tokens read from the prompt cache. */
  readonly cacheReadInputTokens: number
  /** Input tokens written to the prompt cache. */
  readonly cacheWriteInputTokens: number
}

/** Why the model stopped. */
export type StopReason = "end_turn" | "max_tokens" | "stop_sequence" | "tool_use" | "refusal" | "other"

/** A model's answer. */
export interface Response {
  readonly id: string
  /** The model that answered (a fallback may differ from the one asked). */
  readonly model: string
  readonly content: ReadonlyArray<ContentBlock>
  readonly stopReason: StopReason
  readonly usage: Usage
  /** What the response's headers said about the quota. */
  readonly rateLimits: RateLimitSnapshot
}

/** The text of a response, its text blocks joined. */
export const text = (response: Response): string =>
  response.content.flatMap((block) => block.type === "text" ? [block.text] : []).join("")

/** The tool calls of a response. */
export const toolCalls = (response: Response): ReadonlyArray<ToolUseBlock> =>
  response.content.filter((block): block is ToolUseBlock => block.type === "tool_use")

/** One event of a streamed answer. The stream ends with `Done`, which carries the usage. */
export type StreamEvent =
  | { readonly _tag: "TextDelta"; readonly text: string }
  | { readonly _tag: "ToolCall"; readonly call: ToolUseBlock }
  | { readonly _tag: "Done"; readonly response: Response }

/** Whether a request marks a prompt-cache breakpoint (`systemCacheControl`, or `cacheControl` on a block). */
export const marksCache = (request: Request): boolean =>
  request.systemCacheControl !== undefined ||
  request.messages.some((message) => typeof message.content !== "string" && message.content.some((block) => block.type === "text" && block.cacheControl !== undefined))

/**
 * The most a call whose input is estimated at `inputTokens` may have used when
 * its answer never came (a timeout, a reset, an interruption): all of its
 * output, and its input as plain input, or as cache writes (the dearer price)
 * when the request marks the cache.
 */
export const worstCaseUsage = (request: Request, inputTokens: number): Usage =>
  marksCache(request)
    ? { inputTokens: 0, outputTokens: request.maxOutputTokens, cacheReadInputTokens: 0, cacheWriteInputTokens: inputTokens }
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
// Errors
// ---------------------------------------------------------------------------

interface ErrorFields {
  /** The provider that answered: "anthropic", "openai", "simulator", … */
  readonly provider: string
  readonly model?: string | undefined
  /** The HTTP status, when there was one. */
  readonly status?: number | undefined
  /** The provider's own message. */
  readonly detail: string
  /** The provider's `x-should-retry` verdict, which wins over the status. */
  readonly shouldRetry?: boolean | undefined
  /** The provider's request id, for support tickets. */
  readonly requestId?: string | undefined
}

const describe = (name: string, fields: ErrorFields): string =>
  `${name} from ${fields.provider}${fields.model === undefined ? "" : ` (${fields.model})`}${fields.status === undefined ? "" : `, HTTP ${fields.status}`}: ${fields.detail}`

/** 429: a quota ran out. `retryAfter` is the provider's hint, `dimension` which bucket ran out. */
export class RateLimited extends Data.TaggedError("RateLimited")<ErrorFields & {
  readonly retryAfter?: Duration.Duration | undefined
  readonly dimension?: Quota.Dimension | undefined
  readonly rateLimits?: RateLimitSnapshot | undefined
}> {
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Rate limited", this)
  }
}

/** 529 (Anthropic) or 503 with an overloaded body: the provider as a whole is busy. No quota hint. */
export class Overloaded extends Data.TaggedError("Overloaded")<ErrorFields & {
  readonly retryAfter?: Duration.Duration | undefined
}> {
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Overloaded", this)
  }
}

/** 500, 502, 503, 504: transient trouble on the provider's side. */
export class ServerError extends Data.TaggedError("ServerError")<ErrorFields & {
  readonly retryAfter?: Duration.Duration | undefined
}> {
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Server error", this)
  }
}

/** 400, 413, 422: the request itself is wrong; retrying cannot help. */
export class BadRequest extends Data.TaggedError("BadRequest")<ErrorFields> {
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Bad request", this)
  }
}

/** 401, 403: the key is missing, wrong or not allowed. */
export class Unauthorized extends Data.TaggedError("Unauthorized")<ErrorFields> {
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Unauthorized", this)
  }
}

/** 404: no such model or endpoint. */
export class NotFound extends Data.TaggedError("NotFound")<ErrorFields> {
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Not found", this)
  }
}

/** The call took longer than allowed. */
export class Timeout extends Data.TaggedError("Timeout")<ErrorFields & { readonly after?: Duration.Duration | undefined }> {
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Timeout", this)
  }
}

/** The connection failed or was reset, or the body could not be read. */
export class NetworkError extends Data.TaggedError("NetworkError")<ErrorFields & { readonly cause?: unknown }> {
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Network error", this)
  }
}

/**
 * 429 with a billing cause (OpenAI's `insufficient_quota`, a spend cap, credits
 * exhausted): no wait will help, so it is never retried and never pauses the key.
 */
export class QuotaExhausted extends Data.TaggedError("QuotaExhausted")<ErrorFields & {
  /** The provider's error code, e.g. `insufficient_quota`. */
  readonly code?: string | undefined
}> {
  get retryable(): boolean {
    return false
  }
  override get message(): string {
    return describe("Quota exhausted", this)
  }
}

/** Everything a provider call can fail with. Each member says whether it may be retried. */
export type ProviderError =
  | RateLimited
  | QuotaExhausted
  | Overloaded
  | ServerError
  | BadRequest
  | Unauthorized
  | NotFound
  | Timeout
  | NetworkError

/** Whether an error may be retried (`x-should-retry` wins over the status). */
export const isRetryable = (error: ProviderError): boolean => error.retryable

/**
 * Whether a failed call may have run at the provider, and so be billed: a
 * timeout or a lost connection may have (the request may have arrived); a
 * refusal (429, 529, 5xx, 4xx, a billing error) was answered without running.
 * The admission path charges a call's worst case only when this holds.
 */
export const mayHaveRun = (error: ProviderError): boolean => error._tag === "Timeout" || error._tag === "NetworkError"

// ---------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------

/**
 * Sluice refused or gave up on a call before or instead of the provider: the
 * limiter shed it or its cost can never fit, a breaker is open, every rung of
 * a ladder failed, the budget would be exceeded.
 */
export type GovernanceError = RateLimiterError | CircuitOpen | AllRungsFailed | BudgetExceeded | BudgetLedgerError | UnknownModel

/** Everything a call through an `LlmClient` can fail with. */
export type CallError = ProviderError | GovernanceError

/** A model client whose calls fail with `E`. */
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

/** What a provider layer builds: a client whose calls fail only with `ProviderError`. */
export type Provider = Client<ProviderError>

/**
 * A model client. Providers implement it (failing with `ProviderError` only);
 * the Governor wraps one and is one (adding `GovernanceError`s).
 */
export class LlmClient extends Context.Tag("@sluice/core/LlmClient")<LlmClient, Client<CallError>>() {}
