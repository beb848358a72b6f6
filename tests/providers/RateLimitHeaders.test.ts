import { describe, expect, it } from "@effect/vitest"
import * as RateLimitHeaders from "@sluice/providers/RateLimitHeaders"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Duration, Effect, FastCheck as fc, Fiber, Logger, Option, Schema, TestClock } from "effect"

const NOW = Date.UTC(2026, 10, 22, 14, 0, 0)
const iso = (offsetMillis: number) => new Date(NOW + offsetMillis).toISOString()

const anthropicOk = {
  "anthropic-ratelimit-requests-limit": "50",
  "anthropic-ratelimit-requests-remaining": "49",
  "anthropic-ratelimit-requests-reset": iso(1_200),
  "anthropic-ratelimit-input-tokens-limit": "30000",
  "anthropic-ratelimit-input-tokens-remaining": "27500",
  "anthropic-ratelimit-input-tokens-reset": iso(5_000),
  "anthropic-ratelimit-output-tokens-limit": "8000",
  "anthropic-ratelimit-output-tokens-remaining": "7900",
  "anthropic-ratelimit-output-tokens-reset": iso(750),
  "anthropic-ratelimit-tokens-limit": "8000",
  "anthropic-ratelimit-tokens-remaining": "7900",
  "anthropic-ratelimit-tokens-reset": iso(750)
}

describe("RateLimitHeaders", () => {
  it("reads a full Anthropic header set, resets as durations from now", () => {
    const { snapshot, warnings } = RateLimitHeaders.parse(new Headers(anthropicOk), NOW, "anthropic")
    expect(warnings).toEqual([])
    expect(snapshot.dimensions.requests).toEqual({ limit: 50, remaining: 49, resetAfter: Duration.millis(1_200) })
    expect(snapshot.dimensions.inputTokens).toEqual({
      limit: 30_000,
      remaining: 27_500,
      resetAfter: Duration.millis(5_000)
    })
    expect(snapshot.dimensions.outputTokens?.remaining).toBe(7_900)
    // the combined "tokens" figure is dropped when input and output are given
    expect(snapshot.dimensions.tokens).toBeUndefined()
    expect(snapshot.retryAfter).toBeUndefined()
  })

  it("keeps Anthropic's combined tokens figure when it is all there is", () => {
    const { snapshot } = RateLimitHeaders.parseAnthropic({ "Anthropic-RateLimit-Tokens-Remaining": "10" }, NOW)
    expect(snapshot.dimensions.tokens).toEqual({ remaining: 10 })
  })

  it("reads an Anthropic 429: retry-after seconds and the exhausted bucket", () => {
    const { snapshot } = RateLimitHeaders.parse({
      ...anthropicOk,
      "anthropic-ratelimit-input-tokens-remaining": "0",
      "retry-after": "12"
    }, NOW)
    expect(snapshot.retryAfter).toEqual(Duration.seconds(12))
    expect(RateLimitHeaders.exhaustedDimension(snapshot)).toBe("inputTokens")
  })

  it("reads OpenAI's headers with Go durations", () => {
    const { snapshot, warnings } = RateLimitHeaders.parse(
      {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "800000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s"
      },
      NOW,
      "openai"
    )
    expect(warnings).toEqual([])
    expect(snapshot.dimensions.requests).toEqual({ limit: 5_000, remaining: 4_999, resetAfter: Duration.millis(12) })
    expect(snapshot.dimensions.tokens).toEqual({ limit: 800_000, remaining: 0, resetAfter: Duration.minutes(6) })
    expect(RateLimitHeaders.exhaustedDimension(snapshot)).toBe("tokens")
  })

  it.each([
    ["1s", 1_000],
    ["6m0s", 360_000],
    ["20ms", 20],
    ["1h2m3.5s", 3_723_500],
    ["0.5s", 500],
    ["3m", 180_000],
    ["250us", 0.25]
  ])("the Go duration %s is %d ms", (text, millis) => {
    expect(Duration.toMillis(Schema.decodeSync(RateLimitHeaders.GoDuration)(text))).toBeCloseTo(millis, 9)
  })

  it("Azure: retry-after-ms wins over retry-after; remaining counts are read", () => {
    const { snapshot } = RateLimitHeaders.parse(
      {
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-remaining-tokens": "2000",
        "retry-after-ms": "1500",
        "retry-after": "2"
      },
      NOW,
      "azure"
    )
    expect(snapshot.retryAfter).toEqual(Duration.millis(1_500))
    expect(snapshot.dimensions.requests).toEqual({ remaining: 10 })
    expect(snapshot.dimensions.tokens).toEqual({ remaining: 2_000 })
  })

  it("retry-after as an HTTP date is a duration from now, never negative", () => {
    const later = new Date(NOW + 30_000).toUTCString()
    expect(RateLimitHeaders.retryAfter({ "retry-after": later }, NOW)).toEqual(Option.some(Duration.seconds(30)))
    const earlier = new Date(NOW - 30_000).toUTCString()
    expect(RateLimitHeaders.retryAfter({ "retry-after": earlier }, NOW)).toEqual(Option.some(Duration.zero))
    expect(RateLimitHeaders.retryAfter({ "retry-after": "soon" }, NOW)).toEqual(Option.none())
  })

  it("reads the IETF RateLimit and RateLimit-Policy fields, both drafts", () => {
    const structured = RateLimitHeaders.parse(
      { "ratelimit-policy": "\"default\";q=100;w=60", "ratelimit": "\"default\";r=50;t=30" },
      NOW,
      "ietf"
    )
    expect(structured.snapshot.dimensions.requests).toEqual({
      limit: 100,
      remaining: 50,
      resetAfter: Duration.seconds(30)
    })
    const older = RateLimitHeaders.parse(
      { "ratelimit-limit": "100", "ratelimit-remaining": "7", "ratelimit-reset": "12", "ratelimit-policy": "100;w=60" },
      NOW,
      "ietf"
    )
    expect(older.snapshot.dimensions.requests).toEqual({ limit: 100, remaining: 7, resetAfter: Duration.seconds(12) })
    const tokens = RateLimitHeaders.parse(
      { "ratelimit-policy": "\"tokens\";q=1000;w=60", "ratelimit": "\"tokens\";r=10;t=1" },
      NOW,
      "ietf"
    )
    expect(tokens.snapshot.dimensions.tokens?.remaining).toBe(10)
  })

  it.each(["abc", "-5", "NaN", "1e999", "", "4.5"])(
    "a garbage count %j is ignored with a warning naming the header",
    (value) => {
      const { snapshot, warnings } = RateLimitHeaders.parse({
        "anthropic-ratelimit-requests-remaining": value,
        "anthropic-ratelimit-requests-limit": "50"
      }, NOW)
      expect(snapshot.dimensions.requests).toEqual({ limit: 50 })
      expect(warnings.map((warning) => warning.header)).toEqual(["anthropic-ratelimit-requests-remaining"])
    }
  )

  it("a garbage reset instant is ignored with a warning", () => {
    const { snapshot, warnings } = RateLimitHeaders.parse({ "anthropic-ratelimit-requests-reset": "tomorrow-ish" }, NOW)
    expect(snapshot.dimensions.requests).toBeUndefined()
    expect(warnings[0]?.header).toBe("anthropic-ratelimit-requests-reset")
  })

  it("absurd durations are ignored, never infinite", () => {
    const { snapshot, warnings } = RateLimitHeaders.parse({
      "retry-after": "1e308",
      "ratelimit": "\"default\";r=5;t=1e308"
    }, NOW)
    expect(snapshot.retryAfter).toBeUndefined()
    expect(snapshot.dimensions.requests).toEqual({ remaining: 5 })
    expect(warnings.map((warning) => warning.header)).toContain("retry-after")
  })

  it("repeated values: the first valid one is taken", () => {
    const { snapshot } = RateLimitHeaders.parse({ "x-ratelimit-remaining-requests": ["junk", "17"] }, NOW)
    expect(snapshot.dimensions.requests?.remaining).toBe(17)
  })

  it.effect("read takes now from the Clock and logs ignored headers by name", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make(({ message }) => {
        logged.push(Array.isArray(message) ? message.join(" ") : String(message))
      })
      yield* TestClock.setTime(NOW)
      const snapshot = yield* RateLimitHeaders.read({
        "anthropic-ratelimit-input-tokens-reset": iso(5_000),
        "anthropic-ratelimit-output-tokens-remaining": "lots"
      }, "anthropic").pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      expect(snapshot.dimensions.inputTokens?.resetAfter).toEqual(Duration.seconds(5))
      expect(logged.some((line) => line.includes("anthropic-ratelimit-output-tokens-remaining"))).toBe(true)
    }))

  it.effect("a snapshot is stamped with the Clock's time when its headers are read, so a store can tell its age", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(NOW)
      expect(RateLimitHeaders.parse(new Headers(anthropicOk), NOW - 7, "anthropic").snapshot.observedAt).toBe(NOW - 7)
      expect(RateLimitHeaders.parse({ "retry-after": "3" }, NOW).snapshot.observedAt).toBe(NOW)
      const snapshot = yield* RateLimitHeaders.read(new Headers(anthropicOk), "anthropic")
      expect(snapshot.observedAt).toBe(NOW)
    }))

  it.scoped("the simulated provider stamps its snapshots with the Clock's time at the response", () =>
    Effect.gen(function*() {
      const { client } = yield* SimulatedClient.make()
      yield* TestClock.setTime(NOW)
      const response = yield* Effect.fork(
        client.complete({
          model: "claude-sonnet-4-5",
          maxOutputTokens: 16,
          messages: [{ role: "user", content: "hi" }]
        })
      )
      yield* TestClock.adjust("1 minute")
      const answer = yield* Fiber.join(response)
      expect(answer.rateLimits.observedAt).toBeGreaterThanOrEqual(NOW)
      expect(answer.rateLimits.observedAt).toBeLessThanOrEqual(NOW + 60_000)
    }))

  const knownHeaders = [
    ...Object.keys(anthropicOk),
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "retry-after-ms",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset"
  ]

  it.prop(
    "random header maps never throw and give finite, non-negative numbers",
    {
      headers: fc.dictionary(
        fc.oneof(fc.constantFrom(...knownHeaders), fc.string({ maxLength: 20 })),
        fc.oneof(
          fc.string({ maxLength: 40 }),
          fc.integer().map(String),
          fc.double().map(String),
          fc.date({ noInvalidDate: true }).map((date) => date.toISOString())
        )
      )
    },
    ({ headers }) => {
      const { snapshot } = RateLimitHeaders.parse(headers, NOW)
      for (const state of Object.values(snapshot.dimensions)) {
        for (
          const value of [
            state?.limit,
            state?.remaining,
            state?.resetAfter === undefined ? undefined : Duration.toMillis(state.resetAfter)
          ]
        ) {
          if (value === undefined) continue
          expect(Number.isFinite(value)).toBe(true)
          expect(value).toBeGreaterThanOrEqual(0)
        }
      }
      if (snapshot.retryAfter !== undefined) expect(Duration.toMillis(snapshot.retryAfter)).toBeGreaterThanOrEqual(0)
    }
  )

  it.prop(
    "valid counts and durations round-trip",
    { count: fc.nat(), millis: fc.integer({ min: 0, max: 10 * 3_600_000 }) },
    ({ count, millis }) => {
      const { snapshot, warnings } = RateLimitHeaders.parse(
        {
          "x-ratelimit-remaining-tokens": String(count),
          "x-ratelimit-reset-tokens": RateLimitHeaders.formatGoDuration(Duration.millis(millis))
        },
        NOW,
        "openai"
      )
      expect(warnings).toEqual([])
      expect(snapshot.dimensions.tokens?.remaining).toBe(count)
      expect(Duration.toMillis(snapshot.dimensions.tokens!.resetAfter!)).toBeCloseTo(millis, 6)
    }
  )

  it.prop(
    "a garbage value in a known count header always yields a warning naming it",
    {
      // garbage: neither the value nor any comma-separated part of it (repeated headers) is a count
      value: fc.string({ maxLength: 12 }).filter((text) =>
        [text, ...text.split(",")].every((part) => {
          const number = Number(part.trim())
          return part.trim() === "" || !(Number.isInteger(number) && number >= 0)
        })
      )
    },
    ({ value }) => {
      const { warnings } = RateLimitHeaders.parse({ "x-ratelimit-remaining-requests": value }, NOW, "openai")
      expect(warnings.map((warning) => warning.header)).toContain("x-ratelimit-remaining-requests")
    }
  )
})
