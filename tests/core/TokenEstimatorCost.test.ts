import { describe, expect, it } from "@effect/vitest"
import { Governor, LlmClient, RateLimiter, TokenEstimator } from "@sluice/core"
import { synthetic } from "@sluice/examples/extract/Documents"
import { request as extractionRequest } from "@sluice/examples/extract/Extraction"
import { Simulator } from "@sluice/simulator"
import * as SimulatedClient from "@sluice/simulator/SimulatedClient"
import { Duration, Effect, Exit, Fiber, Layer, Random, TestClock, Tracer } from "effect"

const MODEL = "claude-haiku-4-5"

const limiterQuota = {
  requests: { limit: 600, per: "1 minute" },
  inputTokens: { limit: 1_000_000, per: "1 minute" },
  outputTokens: { limit: 100_000, per: "1 minute" }
}

/** The job's synthetic documents from `from` on, joined until the simulator counts at least `tokens`. */
const jobText = (tokens: number, from = 0) =>
  Effect.gen(function*() {
    const parts: Array<string> = []
    for (let index = from; Simulator.countTokens({ messages: [{ content: parts.join("\n\n") }] }) < tokens; index++) {
      parts.push((yield* synthetic(index, 2026)).text)
    }
    return parts.join("\n\n")
  })

/** An encoder that counts a token per four characters and records every text it was given. */
const spying = () => {
  const texts: Array<string> = []
  const encode: TokenEstimator.Encoder = (text) => {
    texts.push(text)
    return Math.ceil(text.length / 4)
  }
  return { texts, encode }
}

/** A tracer that records the name of every span, over the one in use. */
const recordingSpans = (names: Array<string>) =>
  Effect.map(Effect.tracer, (native) =>
    Tracer.make({
      span: (...args: Parameters<Tracer.Tracer["span"]>) => {
        names.push(args[0])
        return native.span(...args)
      },
      context: native.context
    }))

describe("TokenEstimator: what counting costs", () => {
  it.effect("a governed call counts its document once, across three retries on two fallback rungs", () =>
    Effect.gen(function*() {
      const document = yield* jobText(2_000)
      const spy = spying()
      const layer = Governor.layer({ retry: { maxAttempts: 3 }, fallback: [{ model: "claude-sonnet-4-5" }] }).pipe(
        Layer.provideMerge(SimulatedClient.layer({ faults: { overloadedRate: 1 } })),
        Layer.provideMerge(RateLimiter.layerMemory({
          quotas: { [`simulator/${MODEL}`]: limiterQuota, "simulator/claude-sonnet-4-5": limiterQuota }
        })),
        Layer.provide(Layer.succeed(TokenEstimator.TokenEstimator, TokenEstimator.makeWith(spy.encode)))
      )
      const exit = yield* Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const fiber = yield* Effect.fork(client.complete({
          model: MODEL,
          messages: [{ role: "user", content: document }],
          maxOutputTokens: 100
        }))
        for (let minute = 0; minute < 30 && fiber.unsafePoll() === null; minute++) {
          yield* TestClock.adjust(Duration.minutes(1))
        }
        return yield* Fiber.await(fiber)
      }).pipe(Effect.provide(layer))
      // Every attempt was refused (529) and the estimate was asked for on each of 2 rungs × 3 passes.
      expect(Exit.isFailure(exit)).toBe(true)
      expect(spy.texts.filter((text) => text === document).length).toBe(1)
    }))

  it.effect("each estimator of the process counts a long text once, whatever request carries it", () =>
    Effect.gen(function*() {
      const spy = spying()
      const estimator = TokenEstimator.makeWith(spy.encode)
      const document = "figures ".repeat(500)
      const request = extractionRequest(MODEL, { id: "d", text: document }, "test")
      const first = yield* estimator.estimate(request)
      const again = yield* estimator.estimate({ ...request, model: "claude-sonnet-4-5" })
      yield* estimator.estimate({ ...request, messages: [{ role: "user", content: `${document}` }] })
      expect(again.rawInputTokens).toBe(first.rawInputTokens)
      expect(spy.texts.filter((text) => text === document).length).toBe(1)
      // Short texts (the system prompt, the tool) are not remembered whole: they cost a lookup in the piece memo.
      expect(spy.texts.filter((text) => text === request.system).length).toBe(3)
    }))

  it.effect(
    "tiktoken's ranks load once per process, on the first estimate that needs them, not when an estimator is made",
    () =>
      Effect.gen(function*() {
        const names: Array<string> = []
        const tracer = yield* recordingSpans(names)
        const loads = () => names.filter((name) => name === "TokenEstimator.encoder").length
        yield* Effect.gen(function*() {
          // cl100k_base: no other test of this file loads it.
          const [one, two] = yield* Effect.all([
            TokenEstimator.make({ encoding: "cl100k_base" }),
            TokenEstimator.make({ encoding: "cl100k_base", safetyMargin: 0.1 })
          ])
          expect(loads()).toBe(0)
          const request = {
            model: MODEL,
            messages: [{ role: "user" as const, content: "hello world" }],
            maxOutputTokens: 1
          }
          const a = yield* one.estimate(request)
          expect(loads()).toBe(1)
          const b = yield* two.estimate(request)
          yield* one.estimate(request)
          expect(loads()).toBe(1)
          expect(a.rawInputTokens).toBe(b.rawInputTokens)
          const [first, second] = yield* Effect.all([
            TokenEstimator.encoder("cl100k_base"),
            TokenEstimator.encoder("cl100k_base")
          ], { concurrency: 2 })
          expect(first).toBe(second)
        }).pipe(Effect.withTracer(tracer))
      }),
    60_000
  )

  describe("a long text is counted from a sample", () => {
    it.effect(
      "a 40,000-token document of the job: within −1 % and +3 % of the whole count, from about 16,000 of its characters",
      () =>
        Effect.gen(function*() {
          const exact = yield* TokenEstimator.encoder()
          const document = yield* jobText(40_000)
          let read = 0
          const counted = TokenEstimator.sampled((text) => {
            read += text.length
            return exact(text)
          })(document)
          const whole = exact(document)
          expect(document.length).toBeGreaterThan(150_000)
          expect(read).toBeLessThanOrEqual(32 * (512 + 64))
          expect(counted / whole - 1).toBeGreaterThan(-0.01)
          expect(counted / whole - 1).toBeLessThan(0.03)
        }),
      60_000
    )

    it("texts up to the threshold are counted whole; a threshold below 16,384 is raised to it", () => {
      const spy = spying()
      const encode = TokenEstimator.sampled(spy.encode, 100)
      const text = "word ".repeat(3_200)
      expect(encode(text)).toBe(Math.ceil(text.length / 4))
      expect(spy.texts).toEqual([text])
    })

    it("a CJK document without whitespace is sampled too, and keeps its own tokens per character", () => {
      const encode = TokenEstimator.sampled((text) => text.length)
      expect(encode("数据".repeat(20_000))).toBe(40_000)
    })
  })

  it.effect(
    "on the job's documents the calibrated estimate never reserves below the provider's count after calibration",
    () =>
      Effect.gen(function*() {
        const exact = yield* TokenEstimator.encoder()
        const estimator = yield* TokenEstimator.make()
        // A BPE provider that counts 1.3 × tiktoken, plus the forced-tool prompt: sampling error is all the estimate can get wrong.
        const provider = (request: LlmClient.Request) =>
          Math.round(TokenEstimator.countRequest(exact, request) * 1.3) + 313
        const sizes = [300, 40_000, 800, 12_000, 2_500, 25_000, 5_000, 200, 18_000, 9_000, 35_000, 1_500]
        const ratios: Array<number> = []
        for (const [i, tokens] of [...sizes, ...[...sizes].reverse()].entries()) {
          const text = yield* jobText(tokens, i * 100)
          const request = extractionRequest(MODEL, { id: `d${i}`, text }, "test")
          const estimate = yield* estimator.estimate(request)
          const actual = provider(request)
          if (i >= 5) ratios.push(estimate.inputTokens / actual)
          yield* estimator.observe(estimate, {
            inputTokens: actual,
            outputTokens: 0,
            cacheReadInputTokens: 0,
            cacheWriteInputTokens: 0
          })
        }
        expect(Math.min(...ratios)).toBeGreaterThanOrEqual(1)
        // …and not by much more than the 5 % margin.
        expect(Math.max(...ratios)).toBeLessThan(1.1)
      }).pipe(Effect.withRandom(Random.make(1))),
    60_000
  )
})
