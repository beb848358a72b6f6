/**
 * How close the estimator comes to the provider's token count, on synthetic
 * documents of heavy-tailed lengths, per request shape, before and after
 * calibration.
 *
 *   pnpm bench:estimator            (from the repository root)
 *
 * The documents are the same kind the extraction job generates: prose of a few
 * hundred to tens of thousands of tokens, with numbers and punctuation. Each is
 * sent, in a random order, as one of three shapes of the same model:
 *
 * - `plain`: a short system prompt and the document;
 * - `tools`: the extraction job's request (one tool, tool choice forced);
 * - `cached`: a long instruction prompt marked for the prompt cache, then the
 *   document (calibrated as plain: the estimator compares the whole input).
 *
 * The "provider" is the simulator's count, which for a request with tools
 * includes Anthropic's published tool-use system prompt for the model (313
 * tokens for Sonnet 4.5 with a forced tool), as a real Claude bills and
 * rate-limits it.
 *
 * Four estimators see the same calls: one that never learns ("before
 * calibration"), the default one, one without the tool-overhead table
 * (`toolOverhead: {}`), which must learn the overhead as the tools shape's
 * ratio, and one that reproduces the estimator before shapes and the table
 * (no table, every call observed as plain: one ratio per model).
 */
import { NodeRuntime } from "@effect/platform-node"
import { TokenEstimator, ToolOverhead } from "@sluice/core"
import type { LlmClient } from "@sluice/core"
import { extract } from "@sluice/examples/workload"
import { Simulator } from "@sluice/simulator"
import { Console, Effect, Random } from "effect"

const model = "claude-sonnet-4-5"

const vocabulary = (
  "the revenue quarter growth market customer product launch team report risk cost margin cloud service " +
  "analysis forecast region sales contract supplier board strategy investment research patient trial data " +
  "model system network policy energy price demand inflation rate bank loan credit share dividend"
).split(" ")

/** A document of about `words` words: sentences with some numbers and punctuation. */
const document = (words: number) =>
  Effect.gen(function*() {
    const parts: Array<string> = []
    for (let i = 0; i < words; i++) {
      const word = vocabulary[yield* Random.nextIntBetween(0, vocabulary.length)]!
      const roll = yield* Random.next
      parts.push(
        roll < 0.05
          ? `${word} ${(yield* Random.nextIntBetween(1, 99_999)).toLocaleString("en-US")}`
          : roll < 0.12
          ? `${word},`
          : roll < 0.18
          ? `${word}.`
          : word
      )
    }
    return `Report ${words}\n${parts.join(" ")}`
  })

type Shape = "plain" | "tools" | "cached"
const shapes: ReadonlyArray<Shape> = ["plain", "tools", "cached"]

/** The long, cacheable instructions of the `cached` shape (~1,500 words). */
const instructions = Effect.map(document(1_500), (text) => `You are an analyst. Follow these house rules.\n${text}`)

const requestOf = (shape: Shape, text: string, system: string): LlmClient.Request => {
  switch (shape) {
    case "plain":
      return {
        model,
        system: "Summarise the document in three sentences.",
        messages: [{ role: "user", content: text }],
        maxOutputTokens: 400
      }
    case "tools":
      return extract(model, { id: "doc", text })
    case "cached":
      return {
        model,
        system,
        systemCacheControl: { type: "ephemeral" },
        messages: [{ role: "user", content: text }],
        maxOutputTokens: 400
      }
  }
}

/** The provider's whole input count: the simulator's, the hidden tool-use prompt included when tools are offered. */
const providerCount = (r: LlmClient.Request) =>
  Simulator.countTokens({
    model: r.model,
    system: r.system,
    messages: r.messages,
    tools: r.tools?.map((tool) => ({ name: tool.name, input_schema: tool.inputSchema })),
    ...(r.toolChoice === undefined ? {} : { tool_choice: r.toolChoice })
  })

interface Sample {
  readonly shape: Shape
  /** Estimate / actual − 1, per estimator. */
  readonly uncalibrated: number
  readonly calibrated: number
  readonly withoutTable: number
  readonly oneRatio: number
}

const program = Effect.gen(function*() {
  const uncalibrated = yield* TokenEstimator.make()
  const calibrated = yield* TokenEstimator.make()
  const withoutTable = yield* TokenEstimator.make({ toolOverhead: {} })
  const oneRatio = yield* TokenEstimator.make({ toolOverhead: {} })
  const system = yield* instructions
  // Heavy-tailed lengths: Pareto, 150 to 20,000 words.
  const lengths = yield* Effect.replicateEffect(
    Effect.map(Random.next, (u) => Math.min(20_000, Math.round(150 / Math.pow(1 - u, 1 / 1.1)))),
    600
  )
  const samples: Array<Sample & { readonly index: number }> = []
  const seen: Record<Shape, number> = { plain: 0, tools: 0, cached: 0 }
  for (const words of lengths) {
    const shape = shapes[yield* Random.nextIntBetween(0, shapes.length)]!
    const r = requestOf(shape, yield* document(words), system)
    const actual = providerCount(r)
    const usage = { inputTokens: actual, outputTokens: 0, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }
    const first = yield* uncalibrated.estimate(r)
    const learned = yield* calibrated.estimate(r)
    const bare = yield* withoutTable.estimate(r)
    const single = yield* oneRatio.estimate(r)
    samples.push({
      shape,
      index: seen[shape]++,
      uncalibrated: first.inputTokens / actual - 1,
      calibrated: learned.inputTokens / actual - 1,
      withoutTable: bare.inputTokens / actual - 1,
      oneRatio: single.inputTokens / actual - 1
    })
    yield* calibrated.observe(learned, usage)
    yield* withoutTable.observe(bare, usage)
    yield* oneRatio.observe({ ...single, shape: undefined }, usage)
  }
  const summary = (values: ReadonlyArray<number>) => {
    if (values.length === 0) return "no samples"
    const sorted = [...values].sort((a, b) => a - b)
    const pct = (p: number) =>
      `${(100 * sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!).toFixed(1).padStart(6)} %`
    const under = values.filter((v) => v < 0).length
    return `median ${pct(0.5)}, p5 ${pct(0.05)}, p95 ${pct(0.95)}, under ${under}/${values.length}`
  }
  const warmUp = 20
  yield* Console.log(
    `${samples.length} calls to ${model}, ${Math.min(...lengths)}–${
      Math.max(...lengths)
    } words; estimate / actual − 1, 5 % margin included`
  )
  yield* Console.log(
    `actual = the simulator's count, which includes the tool-use system prompt (${
      ToolOverhead.tokensFor(ToolOverhead.defaultTable, model, { type: "any" })
    } tokens, forced tool) for tools`
  )
  for (const shape of shapes) {
    const of = samples.filter((s) => s.shape === shape)
    const late = of.filter((s) => s.index >= warmUp)
    yield* Console.log(`${shape} (${of.length} calls):`)
    const row = (label: string, values: ReadonlyArray<number>) => Console.log(`  ${label.padEnd(46)}${summary(values)}`)
    yield* row("before calibration (never learns):", of.map((s) => s.uncalibrated))
    yield* row(`calibrated, after ${warmUp} calls of the shape:`, late.map((s) => s.calibrated))
    yield* row("calibrated, without the overhead table:", late.map((s) => s.withoutTable))
    yield* row("one ratio per model, no table (before #18):", late.map((s) => s.oneRatio))
  }
  const plain = yield* calibrated.calibration(model, "plain")
  const tools = yield* calibrated.calibration(model, "tools")
  const bare = yield* withoutTable.calibration(model, "tools")
  const single = yield* oneRatio.calibration(model)
  yield* Console.log(
    `learned ratios: plain ${plain.inputRatio.toFixed(3)} (${plain.samples} samples, cached included), tools ${
      tools.inputRatio.toFixed(3)
    } (${tools.samples});`
  )
  yield* Console.log(
    `  tools without the table ${bare.inputRatio.toFixed(3)}; one ratio per model ${single.inputRatio.toFixed(3)}`
  )
})

program.pipe(Effect.withRandom(Random.make(42)), NodeRuntime.runMain)
