import { describe, expect, it } from "@effect/vitest"
import { Coalesce, type LlmClient } from "@sluice/core"
import { Deferred, Effect, Exit, Fiber, Option, Ref, TestClock } from "effect"

const request = (text: string): LlmClient.Request => ({
  model: "m",
  messages: [{ role: "user", content: text }],
  maxOutputTokens: 10
})

/** A call that counts its runs and answers when `gate` opens. */
const gated = (runs: Ref.Ref<number>, gate: Deferred.Deferred<string, string>) =>
  Effect.zipRight(Ref.update(runs, (n) => n + 1), Deferred.await(gate))

/** Two identical calls in flight on one coalescer: the leader runs, the follower waits on it. */
const leaderAndFollower = Effect.gen(function*() {
  const coalescer = yield* Coalesce.make<string>()
  const runs = yield* Ref.make(0)
  const gate = yield* Deferred.make<string, string>()
  const leader = yield* Effect.fork(coalescer.run(request("a"), gated(runs, gate)))
  const follower = yield* Effect.fork(coalescer.run(request("a"), gated(runs, gate)))
  yield* TestClock.adjust("1 millis")
  return { follower, gate, leader, runs }
})

describe("Coalesce", () => {
  it.effect("identical requests in flight share one call; a document id does not tell them apart; a different request calls on its own", () =>
    Effect.gen(function*() {
      const coalescer = yield* Coalesce.make<string>()
      const runs = yield* Ref.make(0)
      const gate = yield* Deferred.make<string, string>()
      const a = yield* Effect.fork(coalescer.run(request("a"), gated(runs, gate)))
      const twin = yield* Effect.fork(
        coalescer.run({ ...request("a"), metadata: { documentId: "doc-7" } }, gated(runs, gate))
      )
      const other = yield* Effect.fork(coalescer.run(request("b"), gated(runs, gate)))
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(runs)).toBe(2)
      yield* Deferred.succeed(gate, "answer")
      expect(yield* Fiber.join(a)).toBe("answer")
      expect(yield* Fiber.join(twin)).toBe("answer")
      expect(yield* Fiber.join(other)).toBe("answer")
      // nothing is left in flight: the same request later calls again
      expect(
        yield* coalescer.run(request("a"), Effect.zipRight(Ref.update(runs, (n) => n + 1), Effect.succeed("again")))
      ).toBe("again")
      expect(yield* Ref.get(runs)).toBe(3)
    }))

  it.effect("what governs a call tells twins apart: another tenant, job or priority class calls on its own and never reads another's cache", () =>
    Effect.gen(function*() {
      const coalescer = yield* Coalesce.make<string>({ cacheTtl: "1 minute" })
      const runs = yield* Ref.make(0)
      const gate = yield* Deferred.make<string, string>()
      const variants: ReadonlyArray<LlmClient.RequestMetadata | undefined> = [
        undefined,
        { tenant: "acme" },
        { tenant: "globex" },
        { tenant: "acme", job: "nightly" },
        { tenant: "acme", priority: "interactive" }
      ]
      const fibers = yield* Effect.forEach(
        variants,
        (metadata) =>
          Effect.fork(
            coalescer.run(metadata === undefined ? request("a") : { ...request("a"), metadata }, gated(runs, gate))
          )
      )
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(runs)).toBe(variants.length)
      yield* Deferred.succeed(gate, "answer")
      yield* Effect.forEach(fibers, Fiber.join)
      expect(Coalesce.requestKey({ ...request("a"), metadata: { tenant: "acme" } })).not.toBe(
        Coalesce.requestKey({ ...request("a"), metadata: { tenant: "globex" } })
      )
      // each cached answer is its own tenant's
      expect((yield* coalescer.cached({ ...request("b"), metadata: { tenant: "acme" } }))._tag).toBe("None")
    }))

  it("a request's native body is not part of its key: the key is what Sluice reads of a call", () => {
    const native = (text: string): LlmClient.Native => ({
      api: "anthropic",
      body: { model: "m", max_tokens: 10, messages: [{ role: "user", content: text }], temperature: 0.1 }
    })
    expect(Coalesce.requestKey({ ...request("a"), native: native("a") })).toBe(Coalesce.requestKey(request("a")))
    expect(Coalesce.requestKey({ ...request("a"), native: native("a") })).toBe(
      Coalesce.requestKey({ ...request("a"), native: native("an image") })
    )
    expect(Coalesce.requestKey(request("a"))).not.toContain("anthropic")
  })

  it.effect("the leader's failure is every follower's failure", () =>
    Effect.gen(function*() {
      const { follower, gate, leader, runs } = yield* leaderAndFollower
      yield* Deferred.fail(gate, "refused")
      expect(yield* Fiber.await(leader)).toEqual(Exit.fail("refused"))
      expect(yield* Fiber.await(follower)).toEqual(Exit.fail("refused"))
      expect(yield* Ref.get(runs)).toBe(1)
    }))

  it.effect("when the leader is interrupted, its followers call for themselves", () =>
    Effect.gen(function*() {
      const { follower, gate, leader, runs } = yield* leaderAndFollower
      yield* Fiber.interrupt(leader)
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(runs)).toBe(2)
      yield* Deferred.succeed(gate, "answer")
      expect(yield* Fiber.join(follower)).toBe("answer")
    }))

  it.effect("with a TTL, an answer is cached for `cached` until it expires", () =>
    Effect.gen(function*() {
      const coalescer = yield* Coalesce.make<string>({ cacheTtl: "1 minute" })
      yield* coalescer.run(request("a"), Effect.succeed("answer"))
      expect(Option.getOrUndefined(yield* coalescer.cached(request("a")))).toBe("answer")
      expect((yield* coalescer.cached(request("b")))._tag).toBe("None")
      yield* TestClock.adjust("61 seconds")
      expect((yield* coalescer.cached(request("a")))._tag).toBe("None")
    }))
})
