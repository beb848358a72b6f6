/**
 * The simulator's quota: per API key and model, one token bucket per limit,
 * each holding one minute's worth and refilling continuously, as the providers
 * describe their limits. An Anthropic call is admitted when a request, its
 * charged input and some output are there, and its output is charged after the
 * answer; an OpenAI call needs a request and its input plus `max_tokens` in one
 * combined tokens bucket. Plain functions over the buckets: the engine keeps
 * them per key and reads the time.
 */
import * as TokenBucket from "@sluice/core/TokenBucket"
import type { CacheUsage } from "./promptCache.js"

/** Limits per minute for one API key (and each model it calls). */
export interface Quota {
  readonly requestsPerMinute: number
  readonly inputTokensPerMinute: number
  readonly outputTokensPerMinute: number
  /** OpenAI's combined tokens-per-minute; input + output limits when absent. */
  readonly tokensPerMinute?: number | undefined
}

/** Anthropic's tier-1 limits for Sonnet: 50 requests, 30,000 input and 8,000 output tokens a minute. */
export const defaultQuota: Quota = { requestsPerMinute: 50, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }

/** Whose rules a call follows: Anthropic's (separate input and output limits) or OpenAI's (one tokens limit). */
export type Flavour = "anthropic" | "openai"

export type Dimension = "requests" | "inputTokens" | "outputTokens" | "tokens"

export type Buckets = Record<Dimension, TokenBucket.TokenBucket>

/** Headers' worth of one bucket: its limit, what remains and how long until it is full. */
export interface BucketView {
  readonly limit: number
  readonly remaining: number
  /** Real milliseconds until the bucket is full again. */
  readonly fullAfterMs: number
}

export type Views = Record<Dimension, BucketView>

/** A call admitted, with its input split by the cache, or refused by the limit that binds and when it would fit. */
export type Admission =
  | { readonly _tag: "Admitted"; readonly views: Views; readonly usage: CacheUsage }
  | {
    readonly _tag: "Limited"
    readonly views: Views
    readonly dimension: Dimension
    readonly retryAfterMs: number
    readonly limit: number
  }

const perMinute = (limit: number, minuteMs: number, now: number) =>
  TokenBucket.make({ capacity: limit, ratePerMilli: limit / minuteMs, now })

/** Full buckets for a quota, refilling a limit every `minuteMs`. */
export const bucketsFor = (quota: Quota, minuteMs: number, now: number): Buckets => ({
  requests: perMinute(quota.requestsPerMinute, minuteMs, now),
  inputTokens: perMinute(quota.inputTokensPerMinute, minuteMs, now),
  outputTokens: perMinute(quota.outputTokensPerMinute, minuteMs, now),
  tokens: perMinute(quota.tokensPerMinute ?? quota.inputTokensPerMinute + quota.outputTokensPerMinute, minuteMs, now)
})

const viewOf = (bucket: TokenBucket.TokenBucket, now: number): BucketView => {
  const level = TokenBucket.levelAt(bucket, now)
  return {
    limit: bucket.capacity,
    remaining: Math.max(0, Math.floor(level)),
    fullAfterMs: Math.max(0, Math.ceil((bucket.capacity - level) / bucket.ratePerMilli))
  }
}

/** Every bucket as its headers would state it at `now`. */
export const viewsOf = (buckets: Buckets, now: number): Views => ({
  requests: viewOf(buckets.requests, now),
  inputTokens: viewOf(buckets.inputTokens, now),
  outputTokens: viewOf(buckets.outputTokens, now),
  tokens: viewOf(buckets.tokens, now)
})

/**
 * What a call needs of each bucket to be admitted. Anthropic: a request, the
 * input its limit charges, and some output left (a probe of 1, not taken).
 * OpenAI: a request, and input + `max_tokens` in the combined bucket.
 */
export const needsOf = (
  flavour: Flavour,
  charged: number,
  maxTokens: number
): ReadonlyArray<readonly [Dimension, number]> =>
  flavour === "anthropic"
    ? [["requests", 1], ["inputTokens", charged], ["outputTokens", 1]]
    : [["requests", 1], ["tokens", charged + maxTokens]]

/** The limit that refuses the needs at `now` (the one that fits last) and when it would fit; undefined when all fit. */
export const refusal = (
  buckets: Buckets,
  needs: ReadonlyArray<readonly [Dimension, number]>,
  now: number
): { readonly dimension: Dimension; readonly at: number } | undefined => {
  let worst: { dimension: Dimension; at: number } | undefined
  for (const [dimension, amount] of needs) {
    const at = TokenBucket.fitsAt(buckets[dimension], amount, now)
    if (at > now && (worst === undefined || at > worst.at)) worst = { dimension, at }
  }
  return worst
}

/** Real milliseconds until a refused call would fit: at least 1, a minute when it never fits. */
export const retryAfterMs = (at: number, now: number): number =>
  Number.isFinite(at) ? Math.max(1, Math.ceil(at - now)) : 60_000

/** The buckets after an admitted call's needs are taken; an Anthropic call's charged input also drains the combined bucket. */
export const takeInput = (
  buckets: Buckets,
  needs: ReadonlyArray<readonly [Dimension, number]>,
  flavour: Flavour,
  charged: number,
  now: number
): Buckets => {
  const after = { ...buckets }
  for (const [dimension, amount] of needs) {
    // Anthropic charges output after the answer; the probe of 1 is not taken.
    if (dimension === "outputTokens") continue
    after[dimension] = TokenBucket.take(after[dimension], amount, now)
  }
  if (flavour === "anthropic") after.tokens = TokenBucket.take(after.tokens, charged, now)
  return after
}

/** The buckets after a call's output is charged. OpenAI reserved `max_tokens` in "tokens" at admission; Anthropic charges output now. */
export const takeOutput = (buckets: Buckets, outputTokens: number, flavour: Flavour, now: number): Buckets => ({
  ...buckets,
  outputTokens: TokenBucket.take(buckets.outputTokens, outputTokens, now),
  tokens: flavour === "anthropic" ? TokenBucket.take(buckets.tokens, outputTokens, now) : buckets.tokens
})
