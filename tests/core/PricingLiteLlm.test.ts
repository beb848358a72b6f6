import { SystemError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import { describe, expect, it } from "@effect/vitest"
import { Pricing } from "@sluice/core"
import * as PricingLiteLlm from "@sluice/core/Pricing/LiteLlm"
import { Effect, Either, Layer, Option } from "effect"

/** A few entries in the shape of LiteLLM's `model_prices_and_context_window.json`. */
const file = {
  sample_spec: {
    input_cost_per_token: 0.0,
    litellm_provider: "one of https://docs.litellm.ai/docs/providers",
    max_tokens: "LEGACY parameter. set to max_output_tokens if provider specifies it.",
    mode: "one of: chat, embedding, completion, image_generation, audio_transcription"
  },
  "claude-opus-4-5": {
    cache_creation_input_token_cost: 6.25e-6,
    cache_read_input_token_cost: 5e-7,
    input_cost_per_token: 5e-6,
    litellm_provider: "anthropic",
    max_input_tokens: 200000,
    mode: "chat",
    output_cost_per_token: 2.5e-5,
    supports_prompt_caching: true,
    search_context_cost_per_query: { search_context_size_high: 0.01 }
  },
  "my-model": { input_cost_per_token: 1e-6, output_cost_per_token: 2e-6 },
  "1024-x-1024/dall-e-2": {
    input_cost_per_pixel: 1.9e-8,
    litellm_provider: "openai",
    mode: "image_generation",
    output_cost_per_pixel: 0.0
  },
  "text-embedding-3-small": {
    input_cost_per_token: 2e-8,
    litellm_provider: "openai",
    mode: "embedding"
  },
  "per-second-chat": { input_cost_per_second: 0.001, mode: "chat" },
  // LiteLLM's per-second video models give an output price per token only.
  "half-priced-chat": { output_cost_per_token: 7.5e-6, input_cost_per_second: 0.00049, mode: "chat" },
  "unpriced-chat": { input_cost_per_token: null, output_cost_per_token: null, mode: "chat" }
}

const issuesOf = (input: unknown) =>
  Either.getLeft(Pricing.decodeLiteLlm(input)).pipe(Option.getOrThrow).issues.map((issue) => issue.path)

describe("Pricing from a LiteLLM price file", () => {
  it("decodes USD per token into USD per million tokens, cache prices included", () => {
    const table = Either.getOrThrow(Pricing.decodeLiteLlm(file))
    expect(table["claude-opus-4-5"]).toEqual({
      inputPerMTok: 5,
      outputPerMTok: 25,
      cacheReadPerMTok: 0.5,
      cacheWritePerMTok: 6.25
    })
    // No cache prices given: cache tokens cost what plain input costs, no discount assumed.
    expect(table["my-model"]).toEqual({ inputPerMTok: 1, outputPerMTok: 2, cacheReadPerMTok: 1, cacheWritePerMTok: 1 })
  })

  it("skips sample_spec, other modes than chat/completion/responses and entries without both per-token prices", () => {
    const table = Either.getOrThrow(Pricing.decodeLiteLlm(file))
    expect(Object.keys(table).sort()).toEqual(["claude-opus-4-5", "my-model"])
  })

  it.effect("a model skipped for half a price stays unpriced, never half free", () =>
    Effect.gen(function*() {
      const pricing = yield* Pricing.Pricing
      const error = yield* Effect.flip(pricing.price("half-priced-chat"))
      expect(error).toMatchObject({ _tag: "UnknownModel", model: "half-priced-chat" })
    }).pipe(Effect.provide(Pricing.layerLiteLlm(file))))

  it("a wrong entry is refused with the model and field named", () => {
    expect(issuesOf({ "gpt-x": { input_cost_per_token: 1e-6, output_cost_per_token: -1 } })).toEqual([
      "gpt-x.output_cost_per_token"
    ])
    expect(issuesOf({ "gpt-x": { input_cost_per_token: "0.000001", output_cost_per_token: 1e-6 } })).toEqual([
      "gpt-x.input_cost_per_token"
    ])
    expect(issuesOf({ "gpt-x": { input_cost_per_token: 1e-6, output_cost_per_token: 1e-6, mode: 3 } })).toEqual([
      "gpt-x.mode"
    ])
    expect(
      issuesOf({ a: { output_cost_per_token: null, input_cost_per_token: -1 }, b: { input_cost_per_token: Infinity } })
    )
      .toEqual(["a.input_cost_per_token", "b.input_cost_per_token"])
    expect(issuesOf([])).toEqual([""])
  })

  it("merges over the default table: the file's price wins, the rest stays", () => {
    const table = Either.getOrThrow(
      Pricing.mergeLiteLlm({ "gpt-4.1": { input_cost_per_token: 3e-6, output_cost_per_token: 9e-6 } })
    )
    expect(table["gpt-4.1"]).toMatchObject({ inputPerMTok: 3, outputPerMTok: 9 })
    expect(table["gpt-4.1-nano"]).toEqual(Pricing.defaultTable["gpt-4.1-nano"])
    expect(table["claude-opus-4-5-20251101"]).toEqual(Pricing.defaultTable["claude-opus-4-5-20251101"])
  })

  it.effect("layerLiteLlm provides the Pricing service over the merged table", () =>
    Effect.gen(function*() {
      const pricing = yield* Pricing.Pricing
      const usage = {
        inputTokens: 1_000_000,
        outputTokens: 1_000_000,
        cacheReadInputTokens: 0,
        cacheWriteInputTokens: 0
      }
      expect(yield* pricing.cost("my-model", usage)).toBeCloseTo(3, 9)
      expect(yield* pricing.cost("claude-haiku-4-5", usage)).toBeCloseTo(6, 9)
    }).pipe(Effect.provide(Pricing.layerLiteLlm(file))))

  it.effect("layerFile reads the file through FileSystem; an unreadable or non-JSON file names its path", () =>
    Effect.gen(function*() {
      const files: Record<string, string> = { "/prices.json": JSON.stringify(file), "/broken.json": "{ not json" }
      const fs = FileSystem.layerNoop({
        readFileString: (path) =>
          files[path] === undefined
            ? Effect.fail(
              new SystemError({
                reason: "NotFound",
                module: "FileSystem",
                method: "readFileString",
                pathOrDescriptor: path
              })
            )
            : Effect.succeed(files[path])
      })
      const table = yield* PricingLiteLlm.readFile("/prices.json").pipe(Effect.provide(fs))
      expect(table["my-model"]?.inputPerMTok).toBe(1)
      const pricing = yield* Effect.provide(
        Pricing.Pricing,
        PricingLiteLlm.layerFile("/prices.json").pipe(Layer.provide(fs))
      )
      const million = { inputTokens: 1_000_000, outputTokens: 0, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
      expect(yield* pricing.cost("claude-opus-4-5", million)).toBe(5)
      expect(yield* pricing.cost("gpt-5", million)).toBe(1.25)
      const broken = yield* Effect.flip(PricingLiteLlm.readFile("/broken.json").pipe(Effect.provide(fs)))
      expect(broken.issues[0]!.path).toBe("/broken.json")
      expect(broken.message).toContain("not JSON")
      const missing = yield* Effect.flip(PricingLiteLlm.readFile("/missing.json").pipe(Effect.provide(fs)))
      expect(missing.issues[0]!.path).toBe("/missing.json")
    }))
})
