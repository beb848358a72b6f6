/**
 * The contenders, each written as a user of that tool would write it, with
 * its documented best practice, all sending the same requests through the
 * real `@anthropic-ai/sdk`. Constants a user writes in real seconds (the
 * cookbook's 15-second pause, a retry's base delay) are divided by the time
 * scale, as the provider's minute is.
 */
import Anthropic from "@anthropic-ai/sdk"
import * as ExperimentalRateLimiter from "@effect/experimental/RateLimiter"
import * as ExperimentalRedis from "@effect/experimental/RateLimiter/Redis"
import { Governor, LimiterStore, LlmClient, RateLimiter as SluiceLimiter, TokenEstimator } from "@sluice/core"
import * as RedisStore from "@sluice/core/LimiterStore/Redis"
import * as Extraction from "@sluice/examples/extract/Extraction"
import { defaultConcurrency, quotaOf } from "@sluice/examples/extract/Job"
import { Anthropic as AnthropicProvider } from "@sluice/providers"
import Bottleneck from "bottleneck"
import { Duration, Effect, Layer, RateLimiter, Redacted, Schedule } from "effect"
import { Redis as IORedis } from "ioredis"
import pLimit from "p-limit"
import PQueue from "p-queue"
import {
  arrivals,
  type Doc,
  interactiveParams,
  MODEL,
  paramsOf,
  roughTokens,
  type RunContext,
  type RunResult
} from "./common.js"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const statusOf = (error: unknown): number | undefined =>
  typeof error === "object" && error !== null && "status" in error && typeof error.status === "number"
    ? error.status
    : undefined
const retryable = (error: unknown) => {
  const status = statusOf(error)
  return status === undefined || status === 429 || status === 529 || status >= 500
}
const retryAfterMs = (error: unknown): number | undefined => {
  const headers = typeof error === "object" && error !== null && "headers" in error
    ? (error as { headers?: unknown }).headers
    : undefined
  const value = headers instanceof Headers
    ? headers.get("retry-after")
    : (headers as Record<string, string> | undefined)?.["retry-after"]
  const seconds = value === undefined || value === null ? Number.NaN : Number(value)
  return Number.isFinite(seconds) ? seconds * 1000 : undefined
}

/** Bookkeeping every contender shares: counts, the deadline, interactive arrivals. */
class Run {
  readonly started = performance.now()
  completed = 0
  failed = 0
  timedOut = false
  readonly latencies: Array<number> = []
  private stopped = false
  constructor(readonly ctx: RunContext) {}
  pastDeadline(): boolean {
    if (performance.now() - this.started > this.ctx.deadlineMs) this.timedOut = true
    return this.timedOut
  }
  /** Runs one batch call, counting its outcome; nothing new starts after the deadline. */
  async batch(call: () => Promise<unknown>): Promise<void> {
    if (this.pastDeadline()) return
    try {
      await call()
      this.completed++
    } catch {
      this.failed++
    }
  }
  /** Interactive calls arriving at random until `stop`. */
  interactive(call: (n: number) => Promise<unknown>): void {
    const spec = this.ctx.interactive
    if (spec === undefined) return
    const next = arrivals(spec.meanGapSeconds, spec.seed)
    let n = 0
    const loop = async () => {
      while (!this.stopped) {
        await sleep(next() * 1000)
        if (this.stopped) return
        const started = performance.now()
        void call(++n).then(() => this.latencies.push(performance.now() - started), () => undefined)
      }
    }
    void loop()
  }
  /**
   * Waits for `work`, or gives up a little after the deadline (calls still
   * queued inside a tool are abandoned; the worker process exits after).
   */
  async until(work: Promise<unknown>): Promise<void> {
    const grace = this.ctx.deadlineMs + 2_000 - (performance.now() - this.started)
    await Promise.race([work, sleep(Math.max(0, grace)).then(() => void (this.timedOut = true))])
  }
  finish(): RunResult {
    this.stopped = true
    return {
      completed: this.completed,
      failed: this.failed,
      makespanMs: performance.now() - this.started,
      timedOut: this.timedOut,
      ...(this.ctx.interactive === undefined ? {} : { interactiveLatenciesMs: this.latencies })
    }
  }
}

const sdk = (ctx: RunContext, maxRetries: number) =>
  new Anthropic({ baseURL: ctx.baseURL, apiKey: ctx.apiKey, maxRetries })

/** The SDK alone: a `p-limit` pool of 50 and the SDK's own retries (raised to 6 for a batch). */
export const sdkAlone = async (ctx: RunContext): Promise<RunResult> => {
  const run = new Run(ctx)
  const client = sdk(ctx, 6)
  const limit = pLimit(50)
  run.interactive((n) => client.messages.create(interactiveParams(n)))
  await run.until(
    Promise.all(ctx.docs.map((doc) => limit(() => run.batch(() => client.messages.create(paramsOf(doc))))))
  )
  return run.finish()
}

/**
 * `bottleneck`: a reservoir of requests and one of input tokens (a job's
 * `weight` is its estimated tokens), refilled every provider minute; 50 at
 * once; retries on 429/529/5xx after `retry-after` (its `failed` event).
 */
export const bottleneck = async (
  ctx: RunContext,
  redis?: { readonly url: string; readonly prefix: string }
): Promise<RunResult> => {
  const run = new Run(ctx)
  const client = sdk(ctx, 0)
  const minute = 60_000 / ctx.timeScale
  const cluster = redis === undefined ? {} : {
    datastore: "ioredis" as const,
    clearDatastore: false,
    Redis: IORedis,
    clientOptions: { host: new URL(redis.url).hostname, port: Number(new URL(redis.url).port || 6379) }
  }
  const requests = new Bottleneck({
    ...cluster,
    ...(redis === undefined ? {} : { id: `${redis.prefix}-requests` }),
    maxConcurrent: 50,
    reservoir: ctx.limits.requestsPerMinute,
    reservoirRefreshAmount: ctx.limits.requestsPerMinute,
    reservoirRefreshInterval: minute
  })
  const tokens = new Bottleneck({
    ...cluster,
    ...(redis === undefined ? {} : { id: `${redis.prefix}-tokens` }),
    reservoir: ctx.limits.inputTokensPerMinute,
    reservoirRefreshAmount: ctx.limits.inputTokensPerMinute,
    reservoirRefreshInterval: minute
  })
  requests.on(
    "failed",
    (error, info) =>
      info.retryCount < 5 && retryable(error)
        ? (retryAfterMs(error) ?? (500 * 2 ** info.retryCount) / ctx.timeScale)
        : undefined
  )
  const call = (params: Anthropic.MessageCreateParamsNonStreaming, weight: number, priority: number) =>
    tokens.schedule({ weight, priority }, () => requests.schedule({ priority }, () => client.messages.create(params)))
  run.interactive((n) => call(interactiveParams(n), 60, 0))
  await run.until(Promise.all(ctx.docs.map((doc) => run.batch(() => call(paramsOf(doc), roughTokens(doc), 5)))))
  const result = run.finish()
  await Promise.race([Promise.all([requests.disconnect(), tokens.disconnect()]), sleep(1_000)])
  return result
}

/** `p-queue`: `intervalCap` requests per provider second, 50 at once, the SDK's default retries; interactive first by `priority`. */
export const pQueue = async (ctx: RunContext): Promise<RunResult> => {
  const run = new Run(ctx)
  const client = sdk(ctx, 2)
  const queue = new PQueue({
    concurrency: 50,
    intervalCap: Math.max(1, Math.floor(ctx.limits.requestsPerMinute / 60)),
    interval: 1000 / ctx.timeScale
  })
  run.interactive((n) => queue.add(() => client.messages.create(interactiveParams(n)), { priority: 1 }))
  await run.until(
    Promise.all(
      ctx.docs.map((doc) => queue.add(() => run.batch(() => client.messages.create(paramsOf(doc))), { priority: 0 }))
    )
  )
  return run.finish()
}

/**
 * Effect's own `RateLimiter`: a token bucket of requests and one of input
 * tokens (`withCost`), 50 at once, retried with `Schedule.exponential` and
 * `Schedule.jittered` on 429/529/5xx.
 */
export const effectRateLimiter = (ctx: RunContext): Promise<RunResult> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const run = new Run(ctx)
    const client = sdk(ctx, 0)
    const minute = Duration.millis(60_000 / ctx.timeScale)
    const requests = yield* RateLimiter.make({
      limit: ctx.limits.requestsPerMinute,
      interval: minute,
      algorithm: "token-bucket"
    })
    const tokens = yield* RateLimiter.make({
      limit: ctx.limits.inputTokensPerMinute,
      interval: minute,
      algorithm: "token-bucket"
    })
    const policy = Schedule.exponential(Duration.millis(500 / ctx.timeScale)).pipe(
      Schedule.jittered,
      Schedule.intersect(Schedule.recurs(6))
    )
    const call = (params: Anthropic.MessageCreateParamsNonStreaming, cost: number) =>
      requests(
        tokens(Effect.tryPromise({
          try: (signal) => client.messages.create(params, { signal }),
          catch: (error) => error
        })).pipe(RateLimiter.withCost(cost))
      ).pipe(
        Effect.retry({ schedule: policy, while: retryable })
      )
    run.interactive((n) => Effect.runPromise(call(interactiveParams(n), 60)))
    const all = Effect.forEach(
      ctx.docs,
      (doc) => Effect.promise(() => run.batch(() => Effect.runPromise(call(paramsOf(doc), roughTokens(doc))))),
      {
        concurrency: 50,
        discard: true
      }
    )
    yield* Effect.promise(() => run.until(Effect.runPromise(all)))
    return run.finish()
  })))

/**
 * A port of the OpenAI cookbook's parallel request processor: a request and a
 * token capacity refilled continuously, a task dispatched when both have room
 * (input tokens counted with tiktoken), a 15-second pause after a rate-limit
 * error, up to 5 attempts per task.
 */
export const cookbook = async (ctx: RunContext): Promise<RunResult> => {
  const run = new Run(ctx)
  const client = sdk(ctx, 0)
  const count = await Effect.runPromise(TokenEstimator.encoder("o200k_base"))
  const pauseAfterRateLimitMs = 15_000 / ctx.timeScale
  const perMs = (perMinute: number) => (perMinute * ctx.timeScale) / 60_000
  let requestCapacity = ctx.limits.requestsPerMinute
  let tokenCapacity = ctx.limits.inputTokensPerMinute
  let lastUpdate = performance.now()
  let lastRateLimitError = -Infinity
  let inProgress = 0
  interface Task {
    readonly params: Anthropic.MessageCreateParamsNonStreaming
    readonly tokens: number
    attemptsLeft: number
  }
  const retries: Array<Task> = []
  const fresh: Array<Task> = ctx.docs.map((doc: Doc) => ({
    params: paramsOf(doc),
    tokens: count(doc.text) + count(Extraction.tool.description ?? "") + 200,
    attemptsLeft: 5
  }))
  // The processor reads a file of requests; interactive calls are the application's own, straight to the SDK.
  const direct = sdk(ctx, 2)
  run.interactive((n) => direct.messages.create(interactiveParams(n)))
  let next: Task | undefined
  while (true) {
    if (next === undefined) next = retries.shift() ?? (run.pastDeadline() ? undefined : fresh.shift())
    const now = performance.now()
    requestCapacity = Math.min(
      ctx.limits.requestsPerMinute,
      requestCapacity + perMs(ctx.limits.requestsPerMinute) * (now - lastUpdate)
    )
    tokenCapacity = Math.min(
      ctx.limits.inputTokensPerMinute,
      tokenCapacity + perMs(ctx.limits.inputTokensPerMinute) * (now - lastUpdate)
    )
    lastUpdate = now
    if (next !== undefined && requestCapacity >= 1 && tokenCapacity >= next.tokens) {
      requestCapacity -= 1
      tokenCapacity -= next.tokens
      next.attemptsLeft -= 1
      const task = next
      next = undefined
      inProgress++
      client.messages.create(task.params).then(
        () => {
          inProgress--
          run.completed++
        },
        (error: unknown) => {
          inProgress--
          if (statusOf(error) === 429) lastRateLimitError = performance.now()
          if (task.attemptsLeft > 0 && retryable(error)) retries.push(task)
          else run.failed++
        }
      )
    }
    if (next === undefined && inProgress === 0 && retries.length === 0 && (fresh.length === 0 || run.pastDeadline())) {
      break
    }
    await sleep(1)
    const sinceRateLimit = performance.now() - lastRateLimitError
    if (sinceRateLimit < pauseAfterRateLimitMs) await sleep(pauseAfterRateLimitMs - sinceRateLimit)
  }
  return run.finish()
}

/** Sluice: the Governor (calibrated estimate, limiter, retry, header feedback) in front of the SDK; interactive calls in their own class. */
export const sluice = (ctx: RunContext, store: "memory" | "redis" = "memory"): Promise<RunResult> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const run = new Run(ctx)
    const provider = yield* AnthropicProvider.make({ apiKey: Redacted.make(ctx.apiKey), baseURL: ctx.baseURL })
    // The store lives in this scope (a layer provided to `make` alone would close its connection when `make` returns).
    const limiterStore = store === "redis" && ctx.redis !== undefined
      ? yield* RedisStore.make({ url: ctx.redis.url, prefix: ctx.redis.prefix, localShare: 1 / 4 })
      : yield* LimiterStore.makeMemory
    const limiter = yield* SluiceLimiter.make({
      quotas: { [`anthropic/${MODEL}`]: quotaOf(ctx.limits, ctx.timeScale) }
    }).pipe(
      Effect.provideService(LimiterStore.LimiterStore, limiterStore),
      Effect.orDie
    )
    const client = yield* Governor.make({ count: "estimate" }).pipe(
      Effect.provideService(LlmClient.LlmClient, LlmClient.LlmClient.of(provider)),
      Effect.provideService(SluiceLimiter.RateLimiter, limiter),
      Effect.provideServiceEffect(TokenEstimator.TokenEstimator, TokenEstimator.make())
    )
    run.interactive((n) =>
      Effect.runPromise(client.complete({
        model: MODEL,
        messages: [{ role: "user", content: interactiveParams(n).messages[0]!.content }],
        maxOutputTokens: 120,
        metadata: { priority: "interactive" }
      }))
    )
    const all = Effect.forEach(
      ctx.docs,
      (doc) =>
        Effect.promise(() =>
          run.batch(() => Effect.runPromise(client.complete(Extraction.request(MODEL, doc, "bench"))))
        ),
      {
        concurrency: defaultConcurrency(ctx.limits, ctx.timeScale),
        discard: true
      }
    )
    yield* Effect.promise(() => run.until(Effect.runPromise(all)))
    return run.finish()
  })))

/** `@effect/experimental`'s `RateLimiter` on Redis: token buckets of requests and input tokens (`makeSleep`), 50 at once, exponential jittered retries. */
export const effectExperimentalRedis = (ctx: RunContext): Promise<RunResult> =>
  Effect.runPromise(
    Effect.scoped(Effect.gen(function*() {
      const run = new Run(ctx)
      const client = sdk(ctx, 0)
      const take = yield* ExperimentalRateLimiter.makeSleep
      const window = Duration.millis(60_000 / ctx.timeScale)
      const prefix = ctx.redis?.prefix ?? "bench"
      const policy = Schedule.exponential(Duration.millis(500 / ctx.timeScale)).pipe(
        Schedule.jittered,
        Schedule.intersect(Schedule.recurs(6))
      )
      const call = (params: Anthropic.MessageCreateParamsNonStreaming, cost: number) =>
        Effect.gen(function*() {
          yield* take({
            key: `${prefix}:requests`,
            limit: ctx.limits.requestsPerMinute,
            window,
            algorithm: "token-bucket"
          })
          yield* take({
            key: `${prefix}:tokens`,
            limit: ctx.limits.inputTokensPerMinute,
            window,
            algorithm: "token-bucket",
            tokens: cost
          })
          return yield* Effect.tryPromise({
            try: (signal) => client.messages.create(params, { signal }),
            catch: (error) => error
          })
        }).pipe(Effect.retry({ schedule: policy, while: retryable }))
      const all = Effect.forEach(ctx.docs, (doc) =>
        Effect.promise(() => run.batch(() => Effect.runPromise(call(paramsOf(doc), roughTokens(doc))))), {
        concurrency: 50,
        discard: true
      })
      yield* Effect.promise(() =>
        run.until(Effect.runPromise(all))
      )
      return run.finish()
    })).pipe(
      Effect.provide(ExperimentalRateLimiter.layer.pipe(Layer.provide(ExperimentalRedis.layerStore({
        host: new URL(ctx.redis?.url ?? "redis://127.0.0.1:6379").hostname,
        port: Number(new URL(ctx.redis?.url ?? "redis://127.0.0.1:6379").port || 6379)
      }))))
    )
  )

/** Every contender by name. */
export const contenders = {
  "sdk+p-limit": sdkAlone,
  bottleneck: (ctx: RunContext) => bottleneck(ctx),
  "p-queue": pQueue,
  "effect RateLimiter": effectRateLimiter,
  cookbook,
  sluice: (ctx: RunContext) => sluice(ctx),
  "sluice (redis)": (ctx: RunContext) => sluice(ctx, "redis"),
  "bottleneck (redis)": (ctx: RunContext) => bottleneck(ctx, ctx.redis),
  "@effect/experimental (redis)": effectExperimentalRedis,
  "static 1/N split": (ctx: RunContext) => sluice(ctx)
} as const satisfies Record<string, (ctx: RunContext) => Promise<RunResult>>

export type ContenderName = keyof typeof contenders
