// Smoke test of the packed packages from plain JavaScript (run by scripts/package-check.sh in a
// fresh project outside the workspace): the Promise facade, pointed at a simulator started here.
// Exits non-zero unless the call returned a message and the simulator counted it.
import { createClient } from "@sluice/providers/Promise"
import { Simulator } from "@sluice/simulator"
import { Effect, Exit, Scope } from "effect"

const fail = (message) => {
  console.error(`smoke.mjs: ${message}`)
  process.exitCode = 1
}

const scope = Effect.runSync(Scope.make())
const running = await Effect.runPromise(Scope.extend(Simulator.serve(), scope))
const anthropic = createClient({
  apiKey: "sim-key",
  baseURL: running.url,
  quotas: {
    "claude-haiku-4-5": {
      requests: { limit: 50, per: "1 minute" },
      inputTokens: { limit: 30_000, per: "1 minute" },
      outputTokens: { limit: 8_000, per: "1 minute" }
    }
  }
})
try {
  const message = await anthropic.messages.create({
    model: "claude-haiku-4-5",
    max_tokens: 64,
    messages: [{ role: "user", content: "Say hello." }]
  })
  const text = message.content.filter((block) => block.type === "text").map((block) => block.text).join("")
  if (message.type !== "message" || text.length === 0) fail(`expected a text message, got ${JSON.stringify(message)}`)
  if (!(message.usage.input_tokens > 0 && message.usage.output_tokens > 0)) {
    fail(`expected usage, got ${JSON.stringify(message.usage)}`)
  }
  const stats = await Effect.runPromise(running.stats)
  const accepted = stats.keys.reduce((sum, key) => sum + key.accepted, 0)
  if (accepted !== 1) fail(`expected the simulator to have accepted 1 call, it counted ${accepted}`)
  if (process.exitCode !== 1) {
    console.log(`smoke.mjs: ok (${message.usage.input_tokens} in, ${message.usage.output_tokens} out)`)
  }
} finally {
  await anthropic.close()
  await Effect.runPromise(Scope.close(scope, Exit.void))
}
