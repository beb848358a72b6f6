/**
 * How close the estimator comes to the simulator's own token count, on
 * synthetic documents of heavy-tailed lengths, before and after calibration.
 *
 *   pnpm bench:estimator            (from the repository root)
 *
 * The documents are the same kind the extraction job generates: prose of a few
 * hundred to tens of thousands of tokens, with numbers and punctuation.
 */
import { NodeRuntime } from "@effect/platform-node"
import { TokenEstimator } from "@sluice/core"
import type { LlmClient } from "@sluice/core"
import { Simulator } from "@sluice/providers"
import { extract } from "@sluice/examples/workload"
import { Console, Effect, Random } from "effect"

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
      parts.push(roll < 0.05 ? `${word} ${(yield* Random.nextIntBetween(1, 99_999)).toLocaleString("en-US")}` : roll < 0.12 ? `${word},` : roll < 0.18 ? `${word}.` : word)
    }
    return `Report ${words}\n${parts.join(" ")}`
  })

const request = (text: string): LlmClient.Request => extract("claude-sonnet-4-5", { id: "doc", text })

/** The Anthropic body the simulator counts. */
const body = (r: LlmClient.Request) => ({
  model: r.model,
  system: r.system,
  messages: r.messages,
  tools: r.tools?.map((tool) => ({ name: tool.name, input_schema: tool.inputSchema }))
})

const program = Effect.gen(function*() {
  const estimator = yield* TokenEstimator.TokenEstimator
  // Heavy-tailed lengths: Pareto, 150 to 20,000 words.
  const lengths = yield* Effect.replicateEffect(Effect.map(Random.next, (u) => Math.min(20_000, Math.round(150 / Math.pow(1 - u, 1 / 1.1)))), 400)
  const errors: Array<{ readonly words: number; readonly raw: number; readonly calibrated: number }> = []
  for (const words of lengths) {
    const r = request(yield* document(words))
    const estimate = yield* estimator.estimate(r)
    const actual = Simulator.countTokens(body(r))
    errors.push({
      words,
      raw: estimate.rawInputTokens / actual - 1,
      calibrated: estimate.inputTokens / actual - 1
    })
    yield* estimator.observe(estimate, { inputTokens: actual, outputTokens: 0, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 })
  }
  const summary = (values: ReadonlyArray<number>) => {
    const sorted = [...values].sort((a, b) => a - b)
    const pct = (p: number) => `${(100 * sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!).toFixed(1)} %`
    return `median ${pct(0.5)}, p5 ${pct(0.05)}, p95 ${pct(0.95)}`
  }
  const late = errors.slice(50)
  yield* Console.log(`${errors.length} documents, ${Math.min(...lengths)}–${Math.max(...lengths)} words`)
  yield* Console.log(`tiktoken o200k vs the simulator's count (estimate / actual − 1):`)
  yield* Console.log(`  raw, every document:              ${summary(errors.map((e) => e.raw))}`)
  yield* Console.log(`  calibrated + 5 % margin, after 50: ${summary(late.map((e) => e.calibrated))}`)
  yield* Console.log(`  under-estimates after calibration: ${late.filter((e) => e.calibrated < 0).length} of ${late.length}`)
  yield* Console.log(`  learned ratio: ${(yield* estimator.calibration("claude-sonnet-4-5")).inputRatio.toFixed(3)}`)
})

program.pipe(Effect.provide(TokenEstimator.layer()), Effect.withRandom(Random.make(42)), NodeRuntime.runMain)
