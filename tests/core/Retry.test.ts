import { describe, expect, it } from "@effect/vitest"
import * as LlmClient from "@sluice/core/LlmClient"
import * as Retry from "@sluice/core/Retry"
import { Data, Duration, Effect, Fiber, Logger, LogLevel, Metric, Random, Ref, TestClock } from "effect"

const unavailable = new LlmClient.ServerError({ provider: "sim", status: 503, detail: "unavailable" })
const overloaded = new LlmClient.Overloaded({ provider: "sim", status: 529, detail: "overloaded" })
const badRequest = new LlmClient.BadRequest({ provider: "sim", status: 400, detail: "bad" })
const rateLimited = (retryAfter: Duration.DurationInput) =>
  new LlmClient.RateLimited({
    provider: "sim",
    status: 429,
    detail: "slow down",
    retryAfter: Duration.decode(retryAfter)
  })

class Shed extends Data.TaggedError("Shed")<{ readonly key: string }> {}

const millis = (durations: ReadonlyArray<Duration.Duration>) => durations.map(Duration.toMillis)

const advance = (ms: number) => TestClock.adjust(Duration.millis(ms))

/**
 * An effect that counts its runs and fails with `errors[i]` on run i (the last
 * error repeats), or succeeds with "ok" once the errors run out when `thenSucceed`.
 */
const flaky = <E>(errors: ReadonlyArray<E>, options: { readonly thenSucceed?: boolean } = {}) =>
  Effect.gen(function*() {
    const attempts = yield* Ref.make(0)
    const call = Effect.flatMap(Ref.updateAndGet(attempts, (n) => n + 1), (n): Effect.Effect<string, E> => {
      const error = errors[Math.min(n - 1, errors.length - 1)]
      if (options.thenSucceed === true && n > errors.length) return Effect.succeed("ok")
      return error === undefined ? Effect.succeed("ok") : Effect.fail(error)
    })
    return { call, attempts: Ref.get(attempts) }
  })

describe("Retry", () => {
  describe("delays", () => {
    it.effect("a run of 503s waits base * factor^(n-1) times the draw, for maxAttempts - 1 retries", () =>
      Effect.gen(function*() {
        const errors = Array.from({ length: 8 }, () => unavailable)
        expect(millis(yield* Retry.delays({}, errors))).toEqual([500, 1_000, 2_000, 4_000, 8_000])
        expect(millis(yield* Retry.delays({ base: "200 millis", factor: 3, maxAttempts: 4 }, errors))).toEqual([
          100,
          300,
          900
        ])
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("each draw is uniform under the ceiling: the draws scale each retry's ceiling", () =>
      Effect.gen(function*() {
        expect(millis(yield* Retry.delays({}, [unavailable, unavailable, unavailable]))).toEqual([0, 500, 4_000])
      }).pipe(Effect.withRandom(Random.fixed([0, 0.25, 1]))))

    it.effect("maxDelay caps each ceiling", () =>
      Effect.gen(function*() {
        const errors = Array.from({ length: 6 }, () => unavailable)
        expect(millis(yield* Retry.delays({ maxDelay: "3 seconds" }, errors))).toEqual([
          500,
          1_000,
          1_500,
          1_500,
          1_500
        ])
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("without jitter each delay is the ceiling", () =>
      Effect.gen(function*() {
        const errors = Array.from({ length: 6 }, () => overloaded)
        expect(millis(yield* Retry.delays({ jitter: "none", maxDelay: "5 seconds" }, errors))).toEqual([
          1_000,
          2_000,
          4_000,
          5_000,
          5_000
        ])
      }))

    it.effect("a retry-after is the floor of the delay and may exceed maxDelay", () =>
      Effect.gen(function*() {
        // draw 500 ms vs retry-after 100 ms: the draw wins
        expect(millis(yield* Retry.delays({}, [rateLimited("100 millis")]))).toEqual([500])
        // draw 500 ms vs retry-after 5 s: the provider wins
        expect(millis(yield* Retry.delays({}, [rateLimited("5 seconds")]))).toEqual([5_000])
        // above maxDelay
        expect(millis(yield* Retry.delays({ maxDelay: "2 seconds" }, [rateLimited("10 seconds")]))).toEqual([10_000])
        // Overloaded and ServerError carry it too
        const busy = new LlmClient.Overloaded({ provider: "sim", detail: "", retryAfter: Duration.seconds(3) })
        const down = new LlmClient.ServerError({
          provider: "sim",
          detail: "",
          status: 503,
          retryAfter: Duration.seconds(4)
        })
        expect(millis(yield* Retry.delays({}, [busy, down, unavailable]))).toEqual([3_000, 4_000, 2_000])
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("a retry that would start after maxElapsed is not made", () =>
      Effect.gen(function*() {
        const errors = Array.from({ length: 6 }, () => unavailable)
        // 1 s (at 1 s), 2 s (at 3 s), 4 s would start at 7 s > 5 s
        expect(millis(yield* Retry.delays({ jitter: "none", maxElapsed: "5 seconds" }, errors))).toEqual([1_000, 2_000])
        // a retry-after beyond maxElapsed stops at once
        expect(yield* Retry.delays({ maxElapsed: "1 minute", maxRetryAfter: "1 hour" }, [rateLimited("2 minutes")]))
          .toEqual([])
      }))

    it("a retry-after beyond maxRetryAfter (default 60 s) is a refusal: no retry, whatever maxElapsed allows", () => {
      const day = rateLimited("1 day")
      expect(Retry.decide({ maxElapsed: "30 days" }, { error: day, attempts: 1, elapsed: 0, draw: 0.5 })).toEqual({
        _tag: "Stop",
        reason: "retry-after-too-long"
      })
      expect(Retry.decide({}, { error: rateLimited("99999999999999 millis"), attempts: 1, elapsed: 0, draw: 0.5 })._tag)
        .toBe("Stop")
      expect(Retry.decide({}, { error: rateLimited("60 seconds"), attempts: 1, elapsed: 0, draw: 0.5 })._tag).toBe(
        "Retry"
      )
      expect(
        Retry.decide({ maxRetryAfter: "2 hours", maxElapsed: "1 day" }, {
          error: rateLimited("1 hour"),
          attempts: 1,
          elapsed: 0,
          draw: 0.5
        })._tag
      ).toBe("Retry")
    })

    it("only retryable provider errors retry", () => {
      const decide = (error: unknown) => Retry.decide({}, { error, attempts: 1, elapsed: 0, draw: 0.5 })
      const fields = { provider: "sim", detail: "" }
      for (
        const error of [
          rateLimited("1 second"),
          overloaded,
          new LlmClient.ServerError({ ...fields, status: 500 }),
          new LlmClient.ServerError({ ...fields, status: 504 }),
          new LlmClient.Timeout(fields),
          new LlmClient.NetworkError(fields)
        ]
      ) expect(decide(error)._tag).toBe("Retry")
      for (
        const error of [
          badRequest,
          new LlmClient.BadRequest({ ...fields, status: 422 }),
          new LlmClient.Unauthorized({ ...fields, status: 401 }),
          new LlmClient.NotFound({ ...fields, status: 404 }),
          new LlmClient.ServerError({ ...fields, status: 503, shouldRetry: false }),
          new Shed({ key: "k" }),
          "boom",
          undefined
        ]
      ) expect(decide(error)).toEqual({ _tag: "Stop", reason: "not-retryable" })
      expect(decide(new LlmClient.BadRequest({ ...fields, status: 409, shouldRetry: true }))._tag).toBe("Retry")
      expect(Retry.decide({ maxAttempts: 3 }, { error: unavailable, attempts: 3, elapsed: 0, draw: 0 })).toEqual({
        _tag: "Stop",
        reason: "max-attempts"
      })
      expect(Duration.toMillis(Retry.ceiling({ base: "500 millis" }, 3))).toBe(2_000)
    })
  })

  describe("retry", () => {
    it.effect("re-runs the effect exactly when each drawn delay has passed", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([unavailable])
        const fiber = yield* Effect.fork(Retry.retry(call, { maxAttempts: 4 }))
        yield* advance(0)
        expect(yield* attempts).toBe(1)
        yield* advance(499)
        expect(yield* attempts).toBe(1)
        yield* advance(1)
        expect(yield* attempts).toBe(2)
        yield* advance(999)
        expect(yield* attempts).toBe(2)
        yield* advance(1)
        expect(yield* attempts).toBe(3)
        yield* advance(1_999)
        expect(yield* attempts).toBe(3)
        yield* advance(1)
        expect(yield* attempts).toBe(4)
        // maxAttempts reached: the last error is the result, at once
        expect(yield* Effect.flip(Fiber.join(fiber))).toBe(unavailable)
        yield* advance(60_000)
        expect(yield* attempts).toBe(4)
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("a retry-after holds the retry until it has passed", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([rateLimited("5 seconds")], { thenSucceed: true })
        const fiber = yield* Effect.fork(call.pipe(Retry.retry()))
        yield* advance(4_999)
        expect(yield* attempts).toBe(1)
        yield* advance(1)
        expect(yield* attempts).toBe(2)
        expect(yield* Fiber.join(fiber)).toBe("ok")
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("a non-retryable error fails at once after one attempt", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([badRequest])
        expect(yield* Effect.flip(Retry.retry(call))).toBe(badRequest)
        expect(yield* attempts).toBe(1)
      }))

    it.effect("an error that is not a provider error (a limiter's Shed) is not retried", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky<LlmClient.ProviderError | Shed>([new Shed({ key: "k" })])
        const error = yield* Effect.flip(Retry.retry(call))
        expect(error._tag).toBe("Shed")
        expect(yield* attempts).toBe(1)
      }))

    it.effect("maxAttempts bounds the attempts, the first included", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([overloaded])
        // draws of 0: every delay is zero, so no time needs to pass
        expect(yield* Effect.flip(Retry.retry(call, { maxAttempts: 3 }))).toBe(overloaded)
        expect(yield* attempts).toBe(3)
      }).pipe(Effect.withRandom(Random.fixed([0]))))

    it.effect("maxElapsed stops retrying: the retry that would start too late is not made", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([unavailable])
        // jitter none: retries at 1 s and 3 s; the next would start at 7 s > 5 s
        const fiber = yield* Effect.fork(Retry.retry(call, { jitter: "none", maxElapsed: "5 seconds" }))
        yield* advance(1_000)
        expect(yield* attempts).toBe(2)
        yield* advance(2_000)
        expect(yield* attempts).toBe(3)
        expect(yield* Effect.flip(Fiber.join(fiber))).toBe(unavailable)
      }))

    it.effect("maxElapsed counts the attempts' own time from the start of the first", () =>
      Effect.gen(function*() {
        const attempts = yield* Ref.make(0)
        // each attempt takes 2 s before it fails
        const slow = Ref.update(attempts, (n) => n + 1).pipe(
          Effect.zipRight(Effect.sleep("2 seconds")),
          Effect.zipRight(Effect.fail(unavailable))
        )
        const fiber = yield* Effect.fork(Retry.retry(slow, { jitter: "none", maxElapsed: "4 seconds" }))
        // fails at 2 s; 1 s delay -> second attempt at 3 s (<= 4 s); fails at 5 s; 5 + 2 > 4: stop
        yield* advance(3_000)
        expect(yield* attempts).toBe(2)
        yield* advance(2_000)
        expect(yield* Effect.flip(Fiber.join(fiber))).toBe(unavailable)
        expect(yield* attempts).toBe(2)
      }))

    it.effect("a success after failures returns the value", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky([unavailable, overloaded], { thenSucceed: true })
        const fiber = yield* Effect.fork(Retry.retry(call))
        yield* advance(500 + 1_000)
        expect(yield* Fiber.join(fiber)).toBe("ok")
        expect(yield* attempts).toBe(3)
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))

    it.effect("the schedule works with Effect.retry on a mixed error channel", () =>
      Effect.gen(function*() {
        const { attempts, call } = yield* flaky<LlmClient.ProviderError | Shed>([unavailable, unavailable], {
          thenSucceed: true
        })
        expect(yield* Effect.retry(call, Retry.schedule())).toBe("ok")
        expect(yield* attempts).toBe(3)
      }).pipe(Effect.withRandom(Random.fixed([0]))))

    it.effect("each retry is counted by error tag and logged at debug level with its delay", () =>
      Effect.gen(function*() {
        const counter = Metric.tagged(Retry.retries, "error", "Overloaded")
        const before = (yield* Metric.value(counter)).count
        const lines: Array<string> = []
        const logger = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Debug") lines.push(String(Array.isArray(message) ? message.join(" ") : message))
        })
        const { call } = yield* flaky([overloaded, overloaded, badRequest])
        const fiber = yield* Effect.fork(
          Retry.retry(call).pipe(
            Logger.withMinimumLogLevel(LogLevel.Debug),
            Effect.provide(Logger.replace(Logger.defaultLogger, logger))
          )
        )
        yield* advance(1_500)
        expect(yield* Effect.flip(Fiber.join(fiber))).toBe(badRequest)
        expect((yield* Metric.value(counter)).count - before).toBe(2)
        expect(lines).toEqual(["Sluice retry 1 after Overloaded in 500ms", "Sluice retry 2 after Overloaded in 1s"])
      }).pipe(Effect.withRandom(Random.fixed([0.5]))))
  })
})
