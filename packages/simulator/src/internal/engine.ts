/**
 * The simulator's engine, with no HTTP: the server and the in-process client
 * both sit on it. It keeps one entry per API key and model (its buckets, its
 * prompt cache, its counts) and composes the concerns that live in their own
 * modules: `tokens` (the count), `answers` (what the model writes), `promptCache`
 * (reads and writes of cached prefixes) and `quota` (the buckets and the
 * admission rule). Here remain faults, latency, foreign load and the stats.
 * Time comes only from the Effect `Clock` and randomness only from `Random`,
 * so it runs under `TestClock`.
 */
import * as TokenBucket from "@sluice/core/TokenBucket"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as Cache from "./promptCache.js"
import * as Quota from "./quota.js"

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

export interface Faults {
  readonly overloadedRate?: number | undefined
  readonly serverErrorRate?: number | undefined
  readonly resetRate?: number | undefined
  readonly malformedRate?: number | undefined
  readonly bursts?:
    | ReadonlyArray<
      { readonly startSeconds: number; readonly durationSeconds: number; readonly status: 429 | 529 | 503 }
    >
    | undefined
}

export interface Latency {
  readonly baseMs?: number | undefined
  readonly perOutputTokenMs?: number | undefined
  readonly jitterMs?: number | undefined
}

export interface EngineConfig {
  readonly quota?: Quota.Quota | undefined
  readonly quotas?: { readonly [apiKey: string]: Quota.Quota } | undefined
  readonly timeScale?: number | undefined
  readonly latency?: Latency | undefined
  readonly faults?: Faults | undefined
  readonly foreignLoad?: { readonly share: number } | undefined
  readonly seed?: number | undefined
  readonly promptCache?: Cache.PromptCache | undefined
}

// ---------------------------------------------------------------------------
// Entries and stats
// ---------------------------------------------------------------------------

interface Seconds {
  requests: number
  inputTokens: number
  outputTokens: number
}

interface Entry {
  readonly apiKey: string
  readonly model: string
  readonly quota: Quota.Quota
  buckets: Quota.Buckets
  accepted: number
  rateLimited: number
  rateLimitedBy: Record<Quota.Dimension, number>
  overloaded: number
  serverErrors: number
  resets: number
  inputTokens: number
  outputTokens: number
  cacheReadInputTokens: number
  cacheWriteInputTokens: number
  foreignInputTokens: number
  /** Accepted usage per simulated second, for the best minute's utilisation. */
  readonly perSecond: Map<number, Seconds>
  /** Cached prefixes of this key and model. */
  readonly cache: Cache.Store
}

export interface KeyStats {
  readonly apiKey: string
  readonly model: string
  readonly accepted: number
  readonly rateLimited: number
  /**
   * The 429s of the quota by the limit that refused them (the one that would
   * fit last); injected 429 bursts are in `rateLimited` only.
   */
  readonly rateLimitedBy: Readonly<Record<Quota.Dimension, number>>
  readonly overloaded: number
  readonly serverErrors: number
  readonly resets: number
  /** Input accepted that was neither read from nor written to the prompt cache. */
  readonly inputTokens: number
  readonly outputTokens: number
  /** Input read from the prompt cache: free against the input-token limit. */
  readonly cacheReadInputTokens: number
  /** Input written to the prompt cache: counted against the input-token limit. */
  readonly cacheWriteInputTokens: number
  readonly foreignInputTokens: number
  /** The busiest minute's use of each limit; input counts what the limit charged (uncached + cache writes). */
  readonly bestMinuteUtilisation: {
    readonly requests: number
    readonly inputTokens: number
    readonly outputTokens: number
  }
}

/** What a fault roll decided for one request. */
export type Fault = "none" | "overloaded" | "server-error" | "reset" | "malformed" | "rate-limited"

export interface Engine {
  readonly config: EngineConfig
  /** Real milliseconds per simulated minute. */
  readonly minuteMs: number
  /**
   * Admits a call whose input is `inputTokens`, or says which limit it would
   * exceed. With `prefixes` (from `promptCache.cachePrefixes`), the longest cached one
   * is read and the breakpoints past it are written; an Anthropic call's input
   * limit is charged for plain input and cache writes, not for cache reads.
   */
  readonly admit: (
    apiKey: string,
    model: string,
    inputTokens: number,
    flavour: Quota.Flavour,
    maxTokens: number,
    prefixes?: ReadonlyArray<Cache.CachePrefix>
  ) => Effect.Effect<Quota.Admission>
  /** Charges the output of an admitted call and answers the headers after it. */
  readonly finish: (
    apiKey: string,
    model: string,
    outputTokens: number,
    flavour: Quota.Flavour
  ) => Effect.Effect<Quota.Views>
  readonly views: (apiKey: string, model: string) => Effect.Effect<Quota.Views>
  readonly fault: (apiKey: string, model: string) => Effect.Effect<Fault>
  readonly latency: (outputTokens: number) => Effect.Effect<void>
  readonly stats: Effect.Effect<{ readonly keys: ReadonlyArray<KeyStats> }>
  readonly reset: Effect.Effect<void>
}

const bestMinute = (entry: Entry): KeyStats["bestMinuteUtilisation"] => {
  const seconds = [...entry.perSecond.keys()].sort((a, b) => a - b)
  let best = { requests: 0, inputTokens: 0, outputTokens: 0 }
  let start = 0
  const sum = { requests: 0, inputTokens: 0, outputTokens: 0 }
  for (let end = 0; end < seconds.length; end++) {
    const second = entry.perSecond.get(seconds[end]!)!
    sum.requests += second.requests
    sum.inputTokens += second.inputTokens
    sum.outputTokens += second.outputTokens
    while (seconds[end]! - seconds[start]! >= 60) {
      const old = entry.perSecond.get(seconds[start]!)!
      sum.requests -= old.requests
      sum.inputTokens -= old.inputTokens
      sum.outputTokens -= old.outputTokens
      start++
    }
    best = {
      requests: Math.max(best.requests, sum.requests / entry.quota.requestsPerMinute),
      inputTokens: Math.max(best.inputTokens, sum.inputTokens / entry.quota.inputTokensPerMinute),
      outputTokens: Math.max(best.outputTokens, sum.outputTokens / entry.quota.outputTokensPerMinute)
    }
  }
  return best
}

/** Builds an engine; its foreign-load fiber (if any) lives in the scope. */
export const make = (config: EngineConfig): Effect.Effect<Engine, never, Scope.Scope> =>
  Effect.gen(function*() {
    const timeScale = config.timeScale !== undefined && config.timeScale > 0 ? config.timeScale : 1
    const minuteMs = 60_000 / timeScale
    const entries = new Map<string, Entry>()
    const random = Random.make(config.seed ?? 1)
    const startedAt = yield* Clock.currentTimeMillis
    const startRef = yield* Ref.make(startedAt)

    const cacheTtlMs = (config.promptCache?.ttlSeconds ?? 300) * (minuteMs / 60)
    const cacheMinimum = config.promptCache?.minimumTokens ?? 1_024

    const quotaFor = (apiKey: string): Quota.Quota => config.quotas?.[apiKey] ?? config.quota ?? Quota.defaultQuota

    const entryFor = (apiKey: string, model: string, now: number): Entry => {
      const id = `${apiKey}\u0000${model}`
      let entry = entries.get(id)
      if (entry === undefined) {
        const quota = quotaFor(apiKey)
        entry = {
          apiKey,
          model,
          quota,
          buckets: Quota.bucketsFor(quota, minuteMs, now),
          accepted: 0,
          rateLimited: 0,
          rateLimitedBy: { requests: 0, inputTokens: 0, outputTokens: 0, tokens: 0 },
          overloaded: 0,
          serverErrors: 0,
          resets: 0,
          inputTokens: 0,
          outputTokens: 0,
          cacheReadInputTokens: 0,
          cacheWriteInputTokens: 0,
          foreignInputTokens: 0,
          perSecond: new Map(),
          cache: Cache.makeStore(now, cacheTtlMs)
        }
        entries.set(id, entry)
      }
      return entry
    }

    const record = (entry: Entry, now: number, usage: Partial<Seconds>) => {
      const second = Math.floor((now - startedAt) / (minuteMs / 60))
      const slot = entry.perSecond.get(second) ?? { requests: 0, inputTokens: 0, outputTokens: 0 }
      slot.requests += usage.requests ?? 0
      slot.inputTokens += usage.inputTokens ?? 0
      slot.outputTokens += usage.outputTokens ?? 0
      entry.perSecond.set(second, slot)
    }

    const admit = (
      apiKey: string,
      model: string,
      inputTokens: number,
      flavour: Quota.Flavour,
      maxTokens: number,
      prefixes: ReadonlyArray<Cache.CachePrefix> = []
    ) =>
      Effect.map(Clock.currentTimeMillis, (now): Quota.Admission => {
        const entry = entryFor(apiKey, model, now)
        const plan = Cache.plan(entry.cache, cacheMinimum, inputTokens, prefixes, now)
        // Anthropic's rule: cache reads are free against the input limit, writes count. OpenAI counts all input.
        const charged = flavour === "anthropic"
          ? plan.usage.inputTokens + plan.usage.cacheWriteInputTokens
          : inputTokens
        const needs = Quota.needsOf(flavour, charged, maxTokens)
        const worst = Quota.refusal(entry.buckets, needs, now)
        if (worst !== undefined) {
          entry.rateLimited++
          entry.rateLimitedBy[worst.dimension]++
          return {
            _tag: "Limited",
            views: Quota.viewsOf(entry.buckets, now),
            dimension: worst.dimension,
            retryAfterMs: Quota.retryAfterMs(worst.at, now),
            limit: entry.buckets[worst.dimension].capacity
          }
        }
        entry.buckets = Quota.takeInput(entry.buckets, needs, flavour, charged, now)
        Cache.commit(entry.cache, plan, cacheTtlMs, now)
        entry.accepted++
        entry.inputTokens += plan.usage.inputTokens
        entry.cacheReadInputTokens += plan.usage.cacheReadInputTokens
        entry.cacheWriteInputTokens += plan.usage.cacheWriteInputTokens
        record(entry, now, { requests: 1, inputTokens: charged })
        return { _tag: "Admitted", views: Quota.viewsOf(entry.buckets, now), usage: plan.usage }
      })

    const finish = (apiKey: string, model: string, outputTokens: number, flavour: Quota.Flavour) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = entryFor(apiKey, model, now)
        entry.buckets = Quota.takeOutput(entry.buckets, outputTokens, flavour, now)
        entry.outputTokens += outputTokens
        record(entry, now, { outputTokens })
        return Quota.viewsOf(entry.buckets, now)
      })

    const views = (apiKey: string, model: string) =>
      Effect.map(Clock.currentTimeMillis, (now) => Quota.viewsOf(entryFor(apiKey, model, now).buckets, now))

    const chance = (rate: number | undefined) =>
      rate === undefined || rate <= 0 ? Effect.succeed(false) : Effect.map(random.next, (draw) => draw < rate)

    const fault = (apiKey: string, model: string): Effect.Effect<Fault> =>
      Effect.gen(function*() {
        const faults = config.faults ?? {}
        const now = yield* Clock.currentTimeMillis
        const entry = entryFor(apiKey, model, now)
        const elapsedSeconds = (now - (yield* Ref.get(startRef))) / 1000
        const burst = faults.bursts?.find((b) =>
          elapsedSeconds >= b.startSeconds && elapsedSeconds < b.startSeconds + b.durationSeconds
        )
        if (burst !== undefined) {
          if (burst.status === 429) {
            entry.rateLimited++
            return "rate-limited"
          }
          if (burst.status === 529) {
            entry.overloaded++
            return "overloaded"
          }
          entry.serverErrors++
          return "server-error"
        }
        if (yield* chance(faults.overloadedRate)) {
          entry.overloaded++
          return "overloaded"
        }
        if (yield* chance(faults.serverErrorRate)) {
          entry.serverErrors++
          return "server-error"
        }
        if (yield* chance(faults.resetRate)) {
          entry.resets++
          return "reset"
        }
        if (yield* chance(faults.malformedRate)) return "malformed"
        return "none"
      })

    const latency = (outputTokens: number) =>
      Effect.gen(function*() {
        const settings = config.latency ?? {}
        const jitter = settings.jitterMs === undefined || settings.jitterMs <= 0
          ? 0
          : (yield* random.next) * settings.jitterMs
        const millis = (settings.baseMs ?? 0) + (settings.perOutputTokenMs ?? 0) * outputTokens + jitter
        if (millis > 0) yield* Effect.sleep(Duration.millis(millis / timeScale))
      })

    const stats = Effect.sync(() => ({
      keys: [...entries.values()].map((entry): KeyStats => ({
        apiKey: entry.apiKey,
        model: entry.model,
        accepted: entry.accepted,
        rateLimited: entry.rateLimited,
        rateLimitedBy: { ...entry.rateLimitedBy },
        overloaded: entry.overloaded,
        serverErrors: entry.serverErrors,
        resets: entry.resets,
        inputTokens: entry.inputTokens,
        outputTokens: entry.outputTokens,
        cacheReadInputTokens: entry.cacheReadInputTokens,
        cacheWriteInputTokens: entry.cacheWriteInputTokens,
        foreignInputTokens: Math.round(entry.foreignInputTokens),
        bestMinuteUtilisation: bestMinute(entry)
      }))
    }))

    const reset = Effect.flatMap(
      Clock.currentTimeMillis,
      (now) => Effect.zipRight(Ref.set(startRef, now), Effect.sync(() => entries.clear()))
    )

    // Another consumer on the same key: takes its share of every bucket's refill, tick by tick.
    const share = config.foreignLoad?.share ?? 0
    if (share > 0) {
      // One tick per simulated second.
      const tickMs = Math.max(1, minuteMs / 60)
      yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        yield* Effect.sleep(Duration.millis(tickMs))
        const now = yield* Clock.currentTimeMillis
        for (const entry of entries.values()) {
          for (const dimension of ["requests", "inputTokens", "outputTokens", "tokens"] as const) {
            const bucket = entry.buckets[dimension]
            // Taken whether or not the client left any: the other consumer competes at the same rate.
            const amount = share * bucket.ratePerMilli * tickMs
            entry.buckets[dimension] = TokenBucket.take(bucket, amount, now)
            if (dimension === "inputTokens") entry.foreignInputTokens += amount
          }
        }
      })))
    }

    return { config, minuteMs, admit, finish, views, fault, latency, stats, reset }
  })
