/**
 * Every error a model call through Sluice can fail with, in one module at the
 * bottom of core: the provider's errors (`RateLimited`, `Timeout`, …), which
 * providers map into at their boundary, and the refusals of the layers above
 * (the limiter's `Shed`, the breaker's `CircuitOpen`, the budget's
 * `BudgetExceeded`, …).
 *
 * It imports nothing of core that could import it back: only `effect`, and the
 * types of three leaf modules (`Quota.Dimension`, `Priority.Class`,
 * `RateLimitSnapshot`) that import nothing of core themselves. So the contract
 * (`LlmClient`) names the errors of the layers above it without importing
 * those layers, and no module of core imports one that imports it back. The
 * modules that raise an error re-export it under its old name
 * (`RateLimiter.Shed`, `Budget.BudgetExceeded`, `LlmClient.RateLimited`).
 *
 * One function, {@link classify}, answers for any error what the layers ask
 * of it: may it be retried, may it have reached the provider (and been
 * billed), is it worth the next rung of a ladder, which `outcome` label it
 * gets. `Retry.isRetryable`, `Fallback.isFallbackError`, `Metrics.outcomeOf`,
 * `Admission.isAdmissionError` and the admission path's refunds all read it.
 *
 * @example
 * ```ts
 * import { SluiceError } from "@sluice/core"
 *
 * const verdict = SluiceError.classify(new SluiceError.Timeout({ provider: "anthropic", detail: "no answer" }))
 * // { origin: "provider", retryable: true, mayHaveRun: true, fallback: false, outcome: "timeout" }
 * ```
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"
import type * as Priority from "./Priority.js"
import type * as Quota from "./Quota.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"

// ---------------------------------------------------------------------------
// Type id
// ---------------------------------------------------------------------------

/**
 * Carried by every Sluice error. `Symbol.for`, so that two copies of the
 * package (a bundled one, a linked one) recognise each other's errors.
 *
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("@sluice/core/SluiceError")

/**
 * The type of {@link TypeId}.
 *
 * @since 0.1.0
 * @category models
 */
export type TypeId = typeof TypeId

/**
 * Whether a value is one of Sluice's errors.
 *
 * @example
 * ```ts
 * import { RateLimiter, SluiceError } from "@sluice/core"
 *
 * SluiceError.isSluiceError(new RateLimiter.UnknownKey({ key: "k" })) // true
 * SluiceError.isSluiceError(new Error("boom")) // false
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isSluiceError = (u: unknown): u is CallError =>
  Predicate.hasProperty(u, TypeId) && Predicate.hasProperty(u, "_tag") && typeof u._tag === "string" &&
  Object.prototype.hasOwnProperty.call(traits, u._tag)

// The type id is a getter on each class's prototype, not a field: an instance
// keeps exactly the own properties (its fields) it had before, so equality,
// `toJSON` and printed causes are unchanged.

// ---------------------------------------------------------------------------
// Provider errors
// ---------------------------------------------------------------------------

/**
 * What every provider error carries.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProviderErrorFields {
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

const describe = (name: string, fields: ProviderErrorFields): string =>
  `${name} from ${fields.provider}${fields.model === undefined ? "" : ` (${fields.model})`}${
    fields.status === undefined ? "" : `, HTTP ${fields.status}`
  }: ${fields.detail}`

/**
 * 429: a quota ran out. `retryAfter` is the provider's hint, `dimension` which bucket ran out.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Data.TaggedError("RateLimited")<
  ProviderErrorFields & {
    readonly retryAfter?: Duration.Duration | undefined
    readonly dimension?: Quota.Dimension | undefined
    readonly rateLimits?: RateLimitSnapshot | undefined
  }
> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Rate limited", this)
  }
}

/**
 * 529 (Anthropic) or 503 with an overloaded body: the provider as a whole is busy. No quota hint.
 *
 * @since 0.1.0
 * @category errors
 */
export class Overloaded extends Data.TaggedError("Overloaded")<
  ProviderErrorFields & {
    readonly retryAfter?: Duration.Duration | undefined
  }
> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Overloaded", this)
  }
}

/**
 * 500, 502, 503, 504: transient trouble on the provider's side.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Data.TaggedError("ServerError")<
  ProviderErrorFields & {
    readonly retryAfter?: Duration.Duration | undefined
  }
> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Server error", this)
  }
}

/**
 * 400, 413, 422: the request itself is wrong; retrying cannot help.
 *
 * @since 0.1.0
 * @category errors
 */
export class BadRequest extends Data.TaggedError("BadRequest")<ProviderErrorFields> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Bad request", this)
  }
}

/**
 * 401, 403: the key is missing, wrong or not allowed.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unauthorized extends Data.TaggedError("Unauthorized")<ProviderErrorFields> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Unauthorized", this)
  }
}

/**
 * 404: no such model or endpoint.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotFound extends Data.TaggedError("NotFound")<ProviderErrorFields> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? false
  }
  override get message(): string {
    return describe("Not found", this)
  }
}

/**
 * The call took longer than allowed.
 *
 * @since 0.1.0
 * @category errors
 */
export class Timeout
  extends Data.TaggedError("Timeout")<ProviderErrorFields & { readonly after?: Duration.Duration | undefined }>
{
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return this.shouldRetry ?? true
  }
  override get message(): string {
    return describe("Timeout", this)
  }
}

/**
 * The connection failed or was reset, or the body could not be read.
 *
 * @since 0.1.0
 * @category errors
 */
export class NetworkError extends Data.TaggedError("NetworkError")<ProviderErrorFields & { readonly cause?: unknown }> {
  get [TypeId](): TypeId {
    return TypeId
  }
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
 *
 * @since 0.1.0
 * @category errors
 */
export class QuotaExhausted extends Data.TaggedError("QuotaExhausted")<
  ProviderErrorFields & {
    /** The provider's error code, e.g. `insufficient_quota`. */
    readonly code?: string | undefined
  }
> {
  get [TypeId](): TypeId {
    return TypeId
  }
  get retryable(): boolean {
    return false
  }
  override get message(): string {
    return describe("Quota exhausted", this)
  }
}

/**
 * Everything a provider call can fail with. Each member says whether it may be retried.
 *
 * @since 0.1.0
 * @category models
 */
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

// ---------------------------------------------------------------------------
// The limiter's errors (RateLimiter, Cost, LimiterStore)
// ---------------------------------------------------------------------------

/**
 * A cost larger than a bucket can ever hold: it would wait forever, so it fails at once.
 *
 * @since 0.1.0
 * @category errors
 */
export class CostTooLarge extends Data.TaggedError("CostTooLarge")<{
  readonly key: string
  readonly dimension: Quota.Dimension
  readonly amount: number
  readonly capacity: number
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Cost too large for key "${this.key}": ${this.dimension} needs ${this.amount}, but its bucket holds at most ${this.capacity}`
  }
}

/**
 * A waiter turned away because its lane or the whole queue of its key was full.
 *
 * @since 0.1.0
 * @category errors
 */
export class Shed extends Data.TaggedError("Shed")<{
  readonly key: string
  readonly priority: Priority.Class
  /** `lane-full`: its class had `lanes[class]` waiters; `queue-full`: the key had `maxWaiting`; `displaced`: a higher class took its place. */
  readonly reason: "lane-full" | "queue-full" | "displaced"
  readonly waiting: number
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Shed ${this.priority} call on key "${this.key}" (${this.reason}, ${this.waiting} waiting)`
  }
}

/**
 * A key with no quota while discovery is off.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownKey extends Data.TaggedError("UnknownKey")<{ readonly key: string }> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `No quota is defined for key "${this.key}" and discovery is off`
  }
}

/**
 * A waiter that was not granted within its `maxWait`: it left its lane holding nothing.
 *
 * @since 0.1.0
 * @category errors
 */
export class WaitTimeout extends Data.TaggedError("WaitTimeout")<{
  readonly key: string
  readonly priority: Priority.Class
  readonly maxWait: Duration.Duration
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Waited more than ${
      Duration.format(this.maxWait)
    } for key "${this.key}" (${this.priority}) without being granted`
  }
}

/**
 * A cost with a negative, infinite or non-numeric amount.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidCost extends Data.TaggedError("InvalidCost")<{
  readonly key: string
  readonly dimension: Quota.Dimension
  readonly value: unknown
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Invalid cost for key "${this.key}": ${this.dimension} must be a finite number >= 0, got ${
      String(this.value)
    }`
  }
}

/**
 * The limiter's store could not be reached or answered nonsense.
 *
 * @since 0.1.0
 * @category errors
 */
export class LimiterStoreError extends Data.TaggedError("LimiterStoreError")<{
  readonly key: string
  readonly operation: string
  readonly cause: unknown
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Limiter store failed to ${this.operation} key "${this.key}": ${String(this.cause)}`
  }
}

/**
 * Everything `RateLimiter.acquire` can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type RateLimiterError = CostTooLarge | Shed | UnknownKey | WaitTimeout | InvalidCost | LimiterStoreError

// ---------------------------------------------------------------------------
// The breaker's, the ladder's, the budget's and the price table's errors
// ---------------------------------------------------------------------------

/**
 * Why a breaker opened: a run of failures, the failure rate over the window,
 * or a failed probe while half-open.
 *
 * @since 0.1.0
 * @category models
 */
export type CircuitReason = "consecutive-failures" | "failure-rate" | "probe-failed"

const formatInstant = (millis: number): string => new Date(millis).toISOString()

/**
 * A call refused because the key's breaker is open, or half-open with every
 * probe slot taken. `probeAt` is the instant (ms on the `Clock`) from which a
 * probe is let through — in the past when the breaker is already half-open.
 *
 * @since 0.1.0
 * @category errors
 */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{
  readonly key: string
  /** When the breaker opened (ms, Clock). */
  readonly openedAt: number
  /** When it lets (or began letting) a probe through (ms, Clock). */
  readonly probeAt: number
  readonly reason: CircuitReason
  /** `open`, or `half-open` when the call was refused because the probes were taken. */
  readonly state: "open" | "half-open"
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    const since = `open since ${formatInstant(this.openedAt)} (${this.reason})`
    return this.state === "open"
      ? `Circuit breaker for key "${this.key}" is ${since}; it lets a probe through at ${formatInstant(this.probeAt)}`
      : `Circuit breaker for key "${this.key}" is half-open, ${since}; its probes, under way since ${
        formatInstant(this.probeAt)
      }, decide whether it closes`
  }
}

/**
 * Every rung of a model ladder failed; `attempts` holds each rung's reason, in order.
 *
 * @since 0.1.0
 * @category errors
 */
export class AllRungsFailed extends Data.TaggedError("AllRungsFailed")<{
  readonly attempts: ReadonlyArray<
    { readonly model: string; readonly key: string | undefined; readonly error: unknown }
  >
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    const reasons = this.attempts.map(({ error, model }) => {
      const tag = Predicate.hasProperty(error, "_tag") ? String(error._tag) : "Error"
      const text = Predicate.hasProperty(error, "message") ? String(error.message) : String(error)
      return `${model}: ${tag} (${text})`
    })
    return `Every model of the ladder failed: ${reasons.join("; ")}`
  }
}

/**
 * A call would pass a budget limit: refused before any money was spent.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetExceeded extends Data.TaggedError("BudgetExceeded")<{
  readonly scope: string
  readonly window: string
  readonly spentUsd: number
  readonly reservedUsd: number
  readonly limitUsd: number
  readonly attemptedUsd: number
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Budget exceeded for ${this.scope} (${this.window}): spent $${this.spentUsd.toFixed(4)}, reserved $${
      this.reservedUsd.toFixed(4)
    }, limit $${this.limitUsd.toFixed(2)}; this call needs up to $${this.attemptedUsd.toFixed(4)}`
  }
}

/**
 * The budget's ledger could not be read or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetLedgerError
  extends Data.TaggedError("BudgetLedgerError")<{ readonly operation: string; readonly cause: unknown }>
{
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    return `Budget ledger failed to ${this.operation}: ${String(this.cause)}`
  }
}

/**
 * A model with no entry in the price table.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownModel extends Data.TaggedError("UnknownModel")<{
  readonly model: string
  /** The model families the table does price, when the error comes from a table. */
  readonly known?: ReadonlyArray<string> | undefined
}> {
  get [TypeId](): TypeId {
    return TypeId
  }
  override get message(): string {
    const known = this.known === undefined || this.known.length === 0 ? "" : `; it knows ${this.known.join(", ")}`
    return `No price for model "${this.model}": add it to the price table (Pricing.layer)${known}`
  }
}

/**
 * Sluice refused or gave up on a call before or instead of the provider: the
 * limiter shed it or its cost can never fit, a breaker is open, every rung of
 * a ladder failed, the budget would be exceeded.
 *
 * @since 0.1.0
 * @category models
 */
export type GovernanceError =
  | RateLimiterError
  | CircuitOpen
  | AllRungsFailed
  | BudgetExceeded
  | BudgetLedgerError
  | UnknownModel

/**
 * Everything a call through an `LlmClient` can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type CallError = ProviderError | GovernanceError

// ---------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------

/**
 * Which layer raised an error: the provider, the limiter (`RateLimiter`, its
 * store, a cost), the budget, the price table, a circuit breaker or a model
 * ladder.
 *
 * @since 0.1.0
 * @category models
 */
export type Origin = "provider" | "limiter" | "budget" | "pricing" | "breaker" | "fallback"

/**
 * What {@link classify} says of an error.
 *
 * @since 0.1.0
 * @category models
 */
export interface Verdict {
  /** The layer that raised it; `undefined` when it is not a Sluice error. */
  readonly origin: Origin | undefined
  /**
   * Whether the call may be tried again: a provider error whose `retryable`
   * is true (429, 529, 5xx, timeouts, lost connections, unless
   * `x-should-retry` said otherwise). Nothing else is.
   */
  readonly retryable: boolean
  /**
   * Whether the call may have reached the provider and been billed: a timeout
   * or a lost connection may have; a provider's refusal (429, 529, 5xx, 4xx, a
   * billing error) was answered without running; a refusal by Sluice never
   * left (a ladder's when none of its rungs may have run). An error Sluice
   * does not know may have.
   */
  readonly mayHaveRun: boolean
  /**
   * Whether the next rung of a model ladder may succeed where this one failed:
   * `RateLimited`, `Overloaded`, `CircuitOpen`. `QuotaExhausted` is not: the
   * account is out of money for every model.
   */
  readonly fallback: boolean
  /**
   * The `outcome` label of `sluice_requests_total`: the error's tag in snake
   * case (`RateLimited` → `rate_limited`), for any tagged error, Sluice's or
   * not; `error` for anything untagged.
   */
  readonly outcome: string
}

interface Traits {
  readonly origin: Origin
  readonly mayHaveRun: boolean
  readonly fallback: boolean
}

const refusedBy = (origin: Origin): Traits => ({ origin, mayHaveRun: false, fallback: false })

/** The one table: what each error is, by tag. */
const traits: { readonly [Tag in CallError["_tag"]]: Traits } = {
  RateLimited: { origin: "provider", mayHaveRun: false, fallback: true },
  QuotaExhausted: refusedBy("provider"),
  Overloaded: { origin: "provider", mayHaveRun: false, fallback: true },
  ServerError: refusedBy("provider"),
  BadRequest: refusedBy("provider"),
  Unauthorized: refusedBy("provider"),
  NotFound: refusedBy("provider"),
  Timeout: { origin: "provider", mayHaveRun: true, fallback: false },
  NetworkError: { origin: "provider", mayHaveRun: true, fallback: false },
  CostTooLarge: refusedBy("limiter"),
  Shed: refusedBy("limiter"),
  UnknownKey: refusedBy("limiter"),
  WaitTimeout: refusedBy("limiter"),
  InvalidCost: refusedBy("limiter"),
  LimiterStoreError: refusedBy("limiter"),
  CircuitOpen: { origin: "breaker", mayHaveRun: false, fallback: true },
  AllRungsFailed: refusedBy("fallback"),
  BudgetExceeded: refusedBy("budget"),
  BudgetLedgerError: refusedBy("budget"),
  UnknownModel: refusedBy("pricing")
}

const outcomeOfTag = (tag: string): string => tag.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase()

/**
 * What the layers need to know of any error a call failed with: which layer
 * raised it, whether it may be retried, whether the call may have reached the
 * provider, whether it is worth the next rung of a ladder, and its `outcome`
 * label. The one place these answers live.
 *
 * @example
 * ```ts
 * import { LlmClient, SluiceError } from "@sluice/core"
 *
 * SluiceError.classify(new LlmClient.RateLimited({ provider: "anthropic", detail: "slow down" }))
 * // { origin: "provider", retryable: true, mayHaveRun: false, fallback: true, outcome: "rate_limited" }
 * SluiceError.classify(new Error("boom"))
 * // { origin: undefined, retryable: false, mayHaveRun: true, fallback: false, outcome: "error" }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const classify = (error: unknown): Verdict => {
  if (!isSluiceError(error)) {
    return {
      origin: undefined,
      retryable: false,
      mayHaveRun: true,
      fallback: false,
      outcome: Predicate.hasProperty(error, "_tag") && typeof error._tag === "string"
        ? outcomeOfTag(error._tag)
        : "error"
    }
  }
  const { fallback, mayHaveRun, origin } = traits[error._tag]
  return {
    origin,
    retryable: origin === "provider" && "retryable" in error && error.retryable,
    mayHaveRun: error._tag === "AllRungsFailed"
      ? error.attempts.some((attempt) => classify(attempt.error).mayHaveRun)
      : mayHaveRun,
    fallback,
    outcome: outcomeOfTag(error._tag)
  }
}

/**
 * Whether a value is one of the {@link ProviderError}s.
 *
 * @since 0.1.0
 * @category guards
 */
export const isProviderError = (u: unknown): u is ProviderError => classify(u).origin === "provider"

/**
 * Whether a value is one of the {@link GovernanceError}s: a refusal by Sluice itself.
 *
 * @since 0.1.0
 * @category guards
 */
export const isGovernanceError = (u: unknown): u is GovernanceError => {
  const origin = classify(u).origin
  return origin !== undefined && origin !== "provider"
}
