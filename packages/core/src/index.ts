/**
 * `@sluice/core`: provider-neutral quotas and the limiter every LLM call passes.
 */

/** What a call takes, per dimension. */
export * as Cost from "./Cost.js"
/** The provider-neutral model client: request, response, errors. */
export * as LlmClient from "./LlmClient.js"
/** Where bucket state lives: the store interface and its in-memory layer. */
export * as LimiterStore from "./LimiterStore.js"
/** Sluice's Effect metrics. */
export * as Metrics from "./Metrics.js"
/** Priority classes: interactive, normal, batch. */
export * as Priority from "./Priority.js"
/** Quotas: limits per key and dimension, validated by Schema. */
export * as Quota from "./Quota.js"
/** The limiter service. */
export * as RateLimiter from "./RateLimiter.js"
/** What a provider's response says about a quota. */
export * as RateLimitSnapshot from "./RateLimitSnapshot.js"
/** Pre-flight token counts, calibrated against what providers report. */
export * as TokenEstimator from "./TokenEstimator.js"
/** Pure token-bucket arithmetic. */
export * as TokenBucket from "./TokenBucket.js"
