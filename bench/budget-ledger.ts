/**
 * What one budgeted call costs on the Redis ledger when the window already holds
 * many calls: 200,000 spend events are written into the month first, then each
 * iteration reserves and settles one call through `Budget` (one month limit and
 * one rolling 24-hour limit, so both kinds of window are measured).
 *
 *   npx tsx --conditions=@sluice/source bench/budget-ledger.ts
 *
 * REDIS_URL picks the server (default redis://127.0.0.1:6379); the keys live
 * under a prefix of their own and are deleted at the end.
 *
 * On the 2-core dev machine (other work running): the ledger that kept every
 * spend event and re-summed them in its script took p50 4,489 ms, p90 6,487 ms
 * per reserve+settle; the counter ledger takes p50 6.2 ms, p90 16.1 ms, and no
 * longer depends on the number of prior events.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Budget, Pricing } from "@sluice/core"
import * as BudgetRedis from "@sluice/core/Budget/Redis"
import { Clock, Console, Effect } from "effect"
import { Redis } from "ioredis"

const PRIOR = 200_000
const ITERATIONS = 50
const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"
const prefix = `sluice-bench-budget-${process.pid}`
const limits: ReadonlyArray<Budget.LimitInput> = [
  { scope: { _tag: "global" }, window: "month", limitUsd: 1e9 },
  { scope: { _tag: "global" }, window: { rolling: "24 hours" }, limitUsd: 1e9 }
]
const call = { model: "claude-haiku-4-5", inputTokens: 1_000, maxOutputTokens: 100 }
const usage = { inputTokens: 900, outputTokens: 80, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 }

const quantile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!

const program = Effect.gen(function*() {
  const ledger = yield* BudgetRedis.make({ url, prefix })
  const budget = yield* Budget.make({ limits }).pipe(
    Effect.provideService(Budget.BudgetLedger, ledger),
    Effect.provide(Pricing.layer())
  )
  const now = yield* Clock.currentTimeMillis
  const spend = limits.map((limit, index) => ({ ...Budget.bucketOf(limit as Budget.Limit, index, now), micros: 10 }))
  // The prior spend, written straight into the ledger (a settle with no reservation is plain spend).
  const seeded = performance.now()
  yield* Effect.forEach(
    Array.from({ length: PRIOR }, (_, i) => i),
    (i) => ledger.settle(`seed-${i}`, spend, now - 1_000),
    { concurrency: 256, discard: true }
  )
  yield* Console.log(
    `seeded ${PRIOR.toLocaleString("en-US")} events in ${((performance.now() - seeded) / 1000).toFixed(1)} s`
  )
  const timings: Array<number> = []
  for (let i = 0; i < ITERATIONS; i++) {
    const started = performance.now()
    const reservation = yield* budget.reserve(call)
    yield* reservation.settle(usage)
    timings.push(performance.now() - started)
  }
  timings.sort((a, b) => a - b)
  yield* Console.log(
    `reserve+settle with ${PRIOR.toLocaleString("en-US")} prior events, ${ITERATIONS} calls: p50 ${
      quantile(timings, 0.5).toFixed(2)
    } ms, p90 ${quantile(timings, 0.9).toFixed(2)} ms, max ${timings[timings.length - 1]!.toFixed(2)} ms`
  )
  yield* Console.log(`status: ${JSON.stringify(yield* budget.status)}`)
})

const cleanup = Effect.promise(async () => {
  const redis = new Redis(url)
  let cursor = "0"
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
    cursor = next
    if (keys.length > 0) await redis.del(...keys)
  } while (cursor !== "0")
  redis.disconnect()
})

NodeRuntime.runMain(Effect.scoped(program).pipe(Effect.ensuring(cleanup)))
