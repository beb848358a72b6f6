/**
 * `@sluice/core`: provider-neutral quotas and the limiter every LLM call passes.
 *
 * @since 0.1.0
 */

/**
 * The one path a governed call takes: budget, limiter, call, settlement, exactly once on every exit.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Admission from "./Admission.js"
/**
 * Spend limits per window and scope, reserved before a call and settled after.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Budget from "./Budget.js"
/**
 * Circuit breakers per key: closed / open / half-open.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as CircuitBreaker from "./CircuitBreaker.js"
/**
 * Identical in-flight calls share one call; an optional response cache.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Coalesce from "./Coalesce.js"
/**
 * What a call takes, per dimension.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Cost from "./Cost.js"
/**
 * A model ladder: fall back to the next model on rate limits, overload or an open breaker.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Fallback from "./Fallback.js"
/**
 * The composition users reach for: a governed LlmClient.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Governor from "./Governor.js"
/**
 * Where bucket state lives: the store interface and its in-memory layer.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as LimiterStore from "./LimiterStore.js"
/**
 * The provider-neutral model client: request, response, errors.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as LlmClient from "./LlmClient.js"
/**
 * Sluice's Effect metrics.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Metrics from "./Metrics.js"
/**
 * Stream pipelines: one outcome per document, bounded concurrency, checkpoints, progress.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Pipeline from "./Pipeline.js"
/**
 * Prices per model, as validated data.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Pricing from "./Pricing.js"
/**
 * What a call is expected to read from the provider's prompt cache, so that only what counts is reserved.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as PromptCache from "./PromptCache.js"
/**
 * Priority classes: interactive, normal, batch.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Priority from "./Priority.js"
/**
 * Quotas: limits per key and dimension, validated by Schema.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Quota from "./Quota.js"
/**
 * Quota keys under either spelling (`provider/model` or the bare model), and a
 * limiter that logs keys with no quota and responses with no limit headers.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as QuotaKeys from "./QuotaKeys.js"
/**
 * What a provider's response says about a quota.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as RateLimitSnapshot from "./RateLimitSnapshot.js"
/**
 * The limiter service.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as RateLimiter from "./RateLimiter.js"
/**
 * Quota-aware routing over a pool of deployments: each call where it is admitted soonest.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Router from "./Router.js"
/**
 * Retry policy: exponential backoff with full jitter, retry-after floor, bounded attempts and time.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Retry from "./Retry.js"
/**
 * Every error a call can fail with, and the one classification of them (retryable, may have run, fallback, outcome).
 *
 * @since 0.1.0
 * @category utilities
 */
export * as SluiceError from "./SluiceError.js"
/**
 * Pure token-bucket arithmetic.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as TokenBucket from "./TokenBucket.js"
/**
 * Pre-flight token counts, calibrated against what providers report.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as TokenEstimator from "./TokenEstimator.js"
/**
 * The tokens a provider adds to a request with tools (its tool-use system prompt), per model, as data.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as ToolOverhead from "./ToolOverhead.js"
