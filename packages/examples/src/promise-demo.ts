/**
 * `pnpm example:promise`: the Promise facade, for code that does not use
 * Effect: the Anthropic SDK's `messages.create`, governed.
 */
import { createClient, SluiceError } from "@sluice/providers/Promise"
import { Simulator } from "@sluice/simulator"
import { Effect } from "effect"

// A simulated provider allowing 6 requests a (simulated) minute; a minute lasts a second.
const simulator = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const running = yield* Simulator.serve({
    timeScale: 60,
    quota: { requestsPerMinute: 6, inputTokensPerMinute: 100_000, outputTokensPerMinute: 100_000 }
  })
  yield* Effect.promise(() => demo(running.url))
  return yield* running.stats
})))
console.log("the provider saw", simulator.keys.map(({ accepted, rateLimited }) => ({ accepted, rateLimited })))

async function demo(baseURL: string) {
  // AFTER: createClient instead of new Anthropic(...); the calls are the same.
  const anthropic = createClient({
    apiKey: "sim-key",
    baseURL,
    quotas: {
      "claude-haiku-4-5": {
        requests: { limit: 5, per: "1 second" },
        inputTokens: { limit: 100_000, per: "1 second" },
        outputTokens: { limit: 100_000, per: "1 second" }
      }
    },
    budget: { limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 5 }] }
  })
  try {
    const messages = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      anthropic.messages.create({
        model: "claude-haiku-4-5",
        max_tokens: 256,
        messages: [{ role: "user", content: `Question ${i}: what is a token bucket?` }]
      })))
    console.log(
      `${messages.length} answers; the first:`,
      messages[0]!.stop_reason,
      messages[0]!.usage.output_tokens,
      "output tokens"
    )
  } catch (error) {
    if (error instanceof SluiceError) console.error(error._tag, error.message)
    throw error
  } finally {
    await anthropic.close()
  }
}
