import { describe, expect, it } from "@effect/vitest"
import { Quota } from "@sluice/core"
import { Duration, Effect, Either } from "effect"

const issuesOf = (input: unknown) => {
  const result = Quota.decodeEither(input, "anthropic/sonnet")
  if (Either.isRight(result)) throw new Error("expected the quota to be refused")
  return result.left
}

describe("Quota", () => {
  it("decodes periods written as text or milliseconds", () => {
    const quota = Quota.decodeSync({
      requests: { limit: 50, per: "1 minute" },
      inputTokens: { limit: 30_000, per: 60_000, burst: 10_000 }
    })
    expect(Duration.toMillis(quota.requests!.per)).toBe(60_000)
    expect(Duration.toMillis(quota.inputTokens!.per)).toBe(60_000)
    expect(Quota.capacity(quota.inputTokens!)).toBe(10_000)
    expect(Quota.ratePerMilli(quota.inputTokens!)).toBe(0.5)
    expect(Quota.limitedDimensions(quota)).toEqual(["requests", "inputTokens"])
  })

  it("refuses a negative or zero limit and names the field", () => {
    const error = issuesOf({ requests: { limit: 10, per: "1 minute" }, inputTokens: { limit: -5, per: "1 minute" } })
    expect(error._tag).toBe("InvalidQuota")
    expect(error.issues.map((issue) => issue.path)).toEqual(["inputTokens.limit"])
    expect(error.message).toContain("anthropic/sonnet")
    expect(error.message).toContain("inputTokens.limit")
    expect(issuesOf({ outputTokens: { limit: 0, per: "1 minute" } }).issues[0]!.path).toBe("outputTokens.limit")
  })

  it("refuses an unknown dimension and names it", () => {
    const error = issuesOf({ requests: { limit: 10, per: "1 minute" }, imageTokens: { limit: 5, per: "1 minute" } })
    expect(error.issues.map((issue) => issue.path)).toEqual(["imageTokens"])
  })

  it("refuses a missing or meaningless period and names the field", () => {
    expect(issuesOf({ requests: { limit: 10 } }).issues.map((issue) => issue.path)).toEqual(["requests.per"])
    const bad = issuesOf({ tokens: { limit: 10, per: "fortnightly" } })
    expect(bad.issues[0]!.path).toBe("tokens.per")
    expect(bad.issues[0]!.message).toContain("fortnightly")
    expect(issuesOf({ tokens: { limit: 10, per: 0 } }).issues[0]!.path).toBe("tokens.per")
  })

  it("reports every wrong field at once", () => {
    const error = issuesOf({ requests: { limit: -1, per: "1 minute" }, tokens: { limit: 10 } })
    expect(error.issues.map((issue) => issue.path).sort()).toEqual(["requests.limit", "tokens.per"])
  })

  it("refuses a quota with no dimension", () => {
    expect(issuesOf({}).message).toContain("at least one")
  })

  it.effect("decode fails in the error channel", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Quota.decode({ requests: { limit: "many", per: "1 minute" } }))
      expect(error.issues[0]!.path).toBe("requests.limit")
    }))

  it("builds keys from provider, model and tenant", () => {
    expect(Quota.key({ provider: "anthropic", model: "claude-haiku-4-5" })).toBe("anthropic/claude-haiku-4-5")
    expect(Quota.key({ provider: "openai", model: "gpt-4o", tenant: "acme" })).toBe("openai/gpt-4o/acme")
  })
})
