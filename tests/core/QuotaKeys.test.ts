import { describe, expect, it } from "@effect/vitest"
import { QuotaKeys, RateLimiter } from "@sluice/core"
import { Duration, Effect, Fiber, Logger, LogLevel, Option, Ref, TestClock } from "effect"

const oneAMinute = { requests: { limit: 1, per: "1 minute" } }

/** Runs `self` with a keyed limiter and returns what it logged at warning level. */
const logged = <A, E>(
  self: Effect.Effect<A, E, RateLimiter.RateLimiter>,
  options: Parameters<typeof QuotaKeys.layerMemory>[0]
) =>
  Effect.gen(function*() {
    const lines = yield* Ref.make<ReadonlyArray<string>>([])
    const logger = Logger.make(({ logLevel, message }) => {
      if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) {
        Effect.runSync(Ref.update(lines, (all) => [...all, String(Array.isArray(message) ? message[0] : message)]))
      }
    })
    const result = yield* self.pipe(
      Effect.provide(QuotaKeys.layerMemory(options)),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    return { result, lines: yield* Ref.get(lines) }
  })

describe("QuotaKeys", () => {
  it("finds a key's quota under the key itself, else under its bare model", () => {
    expect(QuotaKeys.spellings("anthropic/claude-haiku-4-5")).toEqual([
      "anthropic/claude-haiku-4-5",
      "claude-haiku-4-5"
    ])
    expect(QuotaKeys.spellings("claude-haiku-4-5")).toEqual(["claude-haiku-4-5"])
    expect(QuotaKeys.lookup(["claude-haiku-4-5"], "simulator/claude-haiku-4-5")).toBe("claude-haiku-4-5")
    expect(QuotaKeys.lookup(["claude-haiku-4-5", "simulator/claude-haiku-4-5"], "simulator/claude-haiku-4-5")).toBe(
      "simulator/claude-haiku-4-5"
    )
    expect(QuotaKeys.lookup(["anthropic/claude-haiku-4-5"], "simulator/claude-haiku-4-5")).toBeUndefined()
  })

  it.effect("a quota written under the bare model holds the provider's key to it", () =>
    Effect.gen(function*() {
      const { result, lines } = yield* logged(
        Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          yield* Effect.scoped(limiter.acquire("simulator/claude-haiku-4-5", {}))
          const stats = yield* limiter.stats("simulator/claude-haiku-4-5")
          // Without the quota the key would discover: the second call would start as soon as the first ended.
          const second = yield* Effect.fork(Effect.scoped(limiter.acquire("simulator/claude-haiku-4-5", {})))
          yield* TestClock.adjust(Duration.seconds(30))
          const early = yield* Fiber.poll(second)
          yield* TestClock.adjust(Duration.seconds(31))
          const late = yield* Fiber.poll(second)
          return { stats, early, late }
        }),
        { quotas: { "claude-haiku-4-5": oneAMinute } }
      )
      expect(result.stats.discovering).toBe(false)
      expect(result.stats.levels.requests?.capacity).toBe(1)
      expect(Option.isNone(result.early)).toBe(true)
      expect(Option.isSome(result.late)).toBe(true)
      expect(lines).toEqual([])
    }))

  it.effect("a take on the provider's key is held to the quota written under the bare model", () =>
    Effect.gen(function*() {
      const { result, lines } = yield* logged(
        Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          yield* limiter.take("simulator/claude-haiku-4-5", {})
          const stats = yield* limiter.stats("simulator/claude-haiku-4-5")
          const second = yield* Effect.fork(limiter.take("simulator/claude-haiku-4-5", {}))
          yield* TestClock.adjust(Duration.seconds(30))
          const early = yield* Fiber.poll(second)
          yield* TestClock.adjust(Duration.seconds(31))
          const late = yield* Fiber.poll(second)
          return { stats, early, late }
        }),
        { quotas: { "claude-haiku-4-5": oneAMinute } }
      )
      expect(result.stats.discovering).toBe(false)
      expect(result.stats.levels.requests?.capacity).toBe(1)
      expect(Option.isNone(result.early)).toBe(true)
      expect(Option.isSome(result.late)).toBe(true)
      expect(lines).toEqual([])
    }))

  it.effect("a call on a key with no quota logs once, naming the configured keys", () =>
    Effect.gen(function*() {
      const { lines } = yield* logged(
        Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          yield* Effect.scoped(limiter.acquire("openai/gpt-4o", {}))
          yield* Effect.scoped(limiter.acquire("openai/gpt-4o", {}))
          yield* Effect.scoped(limiter.acquire("anthropic/claude-haiku-4-5", {}))
        }),
        { quotas: { "anthropic/claude-haiku-4-5": oneAMinute, "claude-sonnet-4-5": oneAMinute } }
      )
      expect(lines).toHaveLength(1)
      expect(lines[0]).toContain(`no quota for key "openai/gpt-4o"`)
      expect(lines[0]).toContain(`configured keys: "anthropic/claude-haiku-4-5", "claude-sonnet-4-5"`)
      expect(lines[0]).toContain(`"openai/gpt-4o", "gpt-4o"`)
    }))

  it.effect("responses without limit headers are warned about once per key; responses with them never", () =>
    Effect.gen(function*() {
      const { lines } = yield* logged(
        Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          yield* limiter.observe("vllm/llama", { dimensions: {} })
          yield* limiter.observe("vllm/llama", { dimensions: {} })
          yield* limiter.observe("anthropic/claude-haiku-4-5", { dimensions: {} })
          yield* limiter.observe("anthropic/claude-sonnet-4-5", {
            dimensions: { requests: { limit: 50, remaining: 49 } }
          })
          yield* limiter.observe("anthropic/claude-sonnet-4-5", { dimensions: {} })
        }),
        { quotas: { "claude-haiku-4-5": oneAMinute } }
      )
      expect(lines).toHaveLength(2)
      expect(lines[0]).toContain(`key "vllm/llama" carry no rate-limit headers and the key has no quota`)
      expect(lines[0]).toContain(`configured keys: "claude-haiku-4-5"`)
      expect(lines[1]).toContain(`key "anthropic/claude-haiku-4-5" carry no rate-limit headers: the key is held`)
    }))

  it.effect("a wrong quota under either spelling is refused with its name", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.provide(
          RateLimiter.RateLimiter,
          QuotaKeys.layerMemory({ quotas: { "gpt-4o": { requests: {} } as never } })
        )
      )
      expect(error._tag).toBe("InvalidQuota")
      expect(error.message).toContain(`"gpt-4o"`)
    }))
})
