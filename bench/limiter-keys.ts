/**
 * Heap of a limiter after 20,000 keys × 1 call, before and after the idle keys
 * are reclaimed (`idleAfter`). Run:
 *
 *   npx tsx --conditions=@sluice/source bench/limiter-keys.ts
 *
 * Under TestClock, so the reclaim needs no real wait; `global.gc` when node
 * runs with --expose-gc (tsx passes NODE_OPTIONS), else the figures include garbage.
 */
import { RateLimiter } from "@sluice/core"
import { Duration, Effect, TestClock, TestContext } from "effect"

const keys = 20_000
const heapMb = () => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc !== undefined) gc()
  return Math.round(process.memoryUsage().heapUsed / 1e6)
}

const program = Effect.gen(function*() {
  const limiter = yield* RateLimiter.RateLimiter
  const before = heapMb()
  for (let i = 0; i < keys; i++) yield* Effect.scoped(limiter.acquire(`tenant-${i}/model`, {}))
  yield* TestClock.adjust(0)
  const loaded = heapMb()
  const resident = (yield* limiter.stats("tenant-0/model")).resident
  yield* TestClock.adjust(Duration.minutes(3))
  const reclaimed = heapMb()
  const after = (yield* limiter.stats("tenant-0/model")).resident
  console.log(
    `keys=${keys} heap: start ${before} MB, after one call each ${loaded} MB (resident: ${resident}), after idleAfter ${reclaimed} MB (resident: ${after})`
  )
}).pipe(
  Effect.scoped,
  Effect.provide(RateLimiter.layerMemory({ maxInFlight: 4 })),
  Effect.provide(TestContext.TestContext)
)

Effect.runPromise(program)
