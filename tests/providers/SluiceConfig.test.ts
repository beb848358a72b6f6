import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { LlmClient, RateLimiter } from "@sluice/core"
import { cli, limitsFromConfig } from "@sluice/examples/extract/Cli"
import { SluiceConfig } from "@sluice/providers"
import { createClient } from "@sluice/providers/Promise"
import * as Simulator from "@sluice/simulator/Simulator"
import { ConfigProvider, Effect, Either, Exit, Layer, Scope } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const example = join(__dirname, "../../examples/sluice.yaml")

const refused = (input: unknown, setBy?: ReadonlyMap<string, string>) => {
  const result = SluiceConfig.decode(input, { source: "sluice.yaml", setBy })
  if (Either.isRight(result)) throw new Error("expected the configuration to be refused")
  return result.left
}

const parsed = (text: string) => Either.getOrThrow(SluiceConfig.parse(text))

/** Runs `effect` with only `env` as the environment. */
const withEnv = (env: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("SluiceConfig: decoding a file", () => {
  it("the example file decodes, every section with it", () => {
    const config = Either.getOrThrow(SluiceConfig.decode(parsed(readFileSync(example, "utf8"))))
    expect(Object.keys(config.quotas)).toEqual(["claude-haiku-4-5", "anthropic/claude-sonnet-4-5"])
    expect(config.quotas["claude-haiku-4-5"]!.requests).toEqual({ limit: 2000, per: 60_000 })
    expect(config.limiter.lanes).toEqual({ interactive: 1000, normal: 10000, batch: 100000 })
    expect(config.governor.priority).toBe("batch")
    expect(config.governor.retry).toMatchObject({ maxAttempts: 6 })
    expect(config.breaker?.consecutiveFailures).toBe(false)
    expect(config.budget?.limits).toEqual([
      { scope: { _tag: "job", id: "extract" }, window: "month", limitUsd: 50, thresholds: [0.5, 0.9] }
    ])
    expect(config.provider).toEqual({ type: "anthropic", apiKeyEnv: "ANTHROPIC_API_KEY" })
  })

  it("a file with three mistakes is refused with three messages, each naming its path", () => {
    const error = refused(parsed(`
quotas:
  "anthropic/claude-haiku-4-5":
    requests: { limit: 50, per: 1 minute }
    inputTokens: { limit: -5, per: 1 minute }
retry:
  maxAttempts: 0
limiter:
  lanes: { batch: 10, urgent: 5 }
`))
    expect(error._tag).toBe("InvalidConfig")
    expect(error.issues.map((issue) => issue.path)).toEqual([
      `quotas."anthropic/claude-haiku-4-5".inputTokens.limit`,
      "limiter.lanes.urgent",
      "retry.maxAttempts"
    ])
    expect(error.issues[0]!.message).toContain("positive")
    expect(error.message).toContain("sluice.yaml (3 mistakes)")
    expect(error.message).toContain(`quotas."anthropic/claude-haiku-4-5".inputTokens.limit: Expected a positive number`)
  })

  it("names wrong fields of the budget, the breaker, the provider and the router by their paths", () => {
    const error = refused({
      provider: { type: "openai-compatible" },
      breaker: { openFor: "soon" },
      budget: { limits: [{ scope: { team: "x" }, window: "day", limitUsd: 5 }] },
      fallback: ["claude-opus-4-1"],
      router: {
        deployments: [
          { name: "east", provider: { type: "anthropic" }, models: ["claude-haiku-4-5"] },
          { name: "east", provider: { type: "anthropic" }, weight: 2 }
        ]
      }
    })
    const paths = error.issues.map((issue) => issue.path)
    expect(paths).toContain("provider.baseURL")
    expect(paths).toContain("breaker.openFor")
    expect(paths.some((path) => path.startsWith("budget.limits.0.scope"))).toBe(true)
  })

  it("names the router's duplicate deployments once the shapes are right", () => {
    const error = refused({
      router: {
        deployments: [
          { name: "east", provider: { type: "anthropic" } },
          { name: "east", provider: { type: "anthropic" } }
        ]
      }
    })
    expect(error.issues).toEqual([{ path: "router.deployments.1.name", message: `Duplicate deployment name "east"` }])
  })

  it("a YAML syntax error names its line", () => {
    const result = SluiceConfig.parse("quotas:\n  a: [1, 2\n", "broken.yaml")
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) expect(result.left.issues[0]!.path).toMatch(/^line \d+$/)
  })

  it.effect("variables override fields of the file, and a wrong one is named with its variable", () =>
    Effect.gen(function*() {
      const file = { retry: { maxAttempts: 6 }, limiter: { maxInFlight: 8 } }
      const config = yield* withEnv({
        SLUICE_RETRY_MAX_ATTEMPTS: "2",
        SLUICE_FALLBACK: "a, b",
        SLUICE_COALESCE: "false"
      })(
        SluiceConfig.fromData(file)
      )
      expect(config.governor.retry).toEqual({ maxAttempts: 2 })
      expect(config.governor.fallback).toEqual([{ model: "a" }, { model: "b" }])
      expect(config.governor.coalesce).toBe(false)
      expect(config.limiter.maxInFlight).toBe(8)
      const error = yield* Effect.flip(withEnv({ SLUICE_MAX_IN_FLIGHT: "many" })(SluiceConfig.fromData(file)))
      expect(error._tag).toBe("InvalidConfig")
      if (error._tag === "InvalidConfig") {
        expect(error.issues.map((issue) => issue.path)).toEqual(["limiter.maxInFlight (SLUICE_MAX_IN_FLIGHT)"])
      }
    }))
})

describe("SluiceConfig: the stack from a file", () => {
  it.scoped("layerFromFile builds provider, limiter and Governor; the bare-model quota holds the provider's key", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({ port: 0 })
      const dir = mkdtempSync(join(tmpdir(), "sluice-config-"))
      const path = join(dir, "sluice.yaml")
      writeFileSync(
        path,
        [
          "provider:",
          "  type: anthropic",
          `  baseURL: ${running.url}`,
          "quotas:",
          "  claude-haiku-4-5:",
          "    requests: { limit: 20, per: 1 minute }",
          "retry: { maxAttempts: 2 }"
        ].join("\n")
      )
      const stack = SluiceConfig.layerFromFile(path).pipe(Layer.provide(NodeContext.layer))
      const { response, stats } = yield* Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const response = yield* client.complete({
          model: "claude-haiku-4-5",
          maxOutputTokens: 64,
          messages: [{ role: "user", content: "Hello" }]
        })
        const limiter = yield* RateLimiter.RateLimiter
        return { response, stats: yield* limiter.stats("anthropic/claude-haiku-4-5") }
      }).pipe(Effect.provide(stack), withEnv({ ANTHROPIC_API_KEY: "sim-key" }))
      expect(response.content.length).toBeGreaterThan(0)
      expect(stats.discovering).toBe(false)
      expect(stats.levels.requests?.capacity).toBe(20)
    }))

  it.scoped("a router section builds a Router over its pool, each deployment on its own quota key", () =>
    Effect.gen(function*() {
      const running = yield* Simulator.serve({ port: 0 })
      const config = Either.getOrThrow(SluiceConfig.decode({
        router: {
          deployments: [
            {
              name: "east",
              provider: { type: "anthropic", baseURL: running.url },
              quota: { requests: { limit: 5, per: "1 minute" } }
            },
            { name: "west", provider: { type: "anthropic", baseURL: running.url }, weight: 2 }
          ]
        },
        retry: false
      }))
      const { response, east } = yield* Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const response = yield* client.complete({
          model: "claude-haiku-4-5",
          maxOutputTokens: 32,
          messages: [{ role: "user", content: "Hello" }]
        })
        const limiter = yield* RateLimiter.RateLimiter
        return { response, east: yield* limiter.stats("east/claude-haiku-4-5") }
      }).pipe(Effect.provide(SluiceConfig.layer(config)), withEnv({}))
      expect(response.content.length).toBeGreaterThan(0)
      expect(east.levels.requests?.capacity).toBe(5)
    }))

  it.effect("layer without a provider or a router is refused, naming the provider", () =>
    Effect.gen(function*() {
      const config = Either.getOrThrow(SluiceConfig.decode({}))
      const error = yield* Effect.flip(Layer.build(SluiceConfig.layer(config)).pipe(Effect.scoped))
      expect(error._tag).toBe("InvalidConfig")
      if (error._tag === "InvalidConfig") expect(error.issues[0]!.path).toBe("provider")
    }))

  it("the extraction job takes its model's limits from the file, under either spelling", () => {
    const config = Either.getOrThrow(SluiceConfig.decode({
      quotas: {
        "claude-haiku-4-5": { requests: { limit: 10, per: "1 second" }, outputTokens: { limit: 900, per: 60_000 } }
      }
    }))
    const flags = { requestsPerMinute: 1, inputTokensPerMinute: 2, outputTokensPerMinute: 3 }
    expect(limitsFromConfig(config, "claude-haiku-4-5", flags)).toEqual({
      requestsPerMinute: 600,
      inputTokensPerMinute: 2,
      outputTokensPerMinute: 900
    })
    expect(limitsFromConfig(config, "claude-sonnet-4-5", flags)).toEqual(flags)
  })
})

describe("the extraction job with --config", () => {
  it.effect("refuses a file with three mistakes before any call, naming the three paths", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "sluice-config-"))
      const path = join(dir, "bad.yaml")
      writeFileSync(
        path,
        [
          "quotas:",
          "  \"anthropic/claude-haiku-4-5\":",
          "    inputTokens: { limit: -5, per: 1 minute }",
          "retry: { maxAttempts: 0 }",
          "breaker: { openFor: soon }"
        ].join("\n")
      )
      const error = yield* Effect.flip(
        cli(["node", "extract", "--config", path, "--db", join(dir, "x.db"), "--report", "none"]).pipe(
          Effect.provide(NodeContext.layer)
        )
      )
      expect(error._tag).toBe("InvalidConfig")
      if (error._tag === "InvalidConfig") {
        expect(error.issues.map((issue) => issue.path)).toEqual([
          `quotas."anthropic/claude-haiku-4-5".inputTokens.limit`,
          "breaker.openFor",
          "retry.maxAttempts"
        ])
      }
    }))
})

describe("the Promise facade: one spelling or the other", () => {
  it("a quota under anthropic/<model> holds the model's calls", async () => {
    const scope = Effect.runSync(Scope.make())
    try {
      const running = await Effect.runPromise(Scope.extend(Simulator.serve({ port: 0 }), scope))
      const anthropic = createClient({
        apiKey: "sim-key",
        baseURL: running.url,
        quotas: { "anthropic/claude-haiku-4-5": { requests: { limit: 33, per: "1 minute" } } }
      })
      try {
        await anthropic.messages.create({
          model: "claude-haiku-4-5",
          max_tokens: 32,
          messages: [{ role: "user", content: "Hi" }]
        })
        const stats = await anthropic.stats("claude-haiku-4-5")
        expect(stats.discovering).toBe(false)
        expect(stats.levels.requests?.capacity).toBe(33)
      } finally {
        await anthropic.close()
      }
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
