/**
 * Scenario 6: tiny documents through the pipeline (Governor, limiter,
 * estimator, meter) over an in-process provider that answers at once, with
 * no binding limit: documents per second and the peak resident memory, which
 * must not grow with the number of documents. `pnpm bench` runs it in a
 * process of its own (`scale-main.ts`), so the harness, the simulator and the
 * other scenarios' leftovers are not in its resident memory.
 */
import { Governor, LimiterStore, LlmClient, Pipeline, RateLimiter, TokenEstimator } from "@sluice/core"
import { Effect, Scheduler, Stream } from "effect"

/** A provider that answers every call at once, with a tiny usage and no rate-limit headers. */
export const instantProvider: LlmClient.Provider = {
  provider: "inproc",
  complete: (request) =>
    Effect.succeed({
      id: "r",
      model: request.model,
      content: [{ type: "text", text: "ok" }],
      stopReason: "end_turn",
      usage: { inputTokens: 12, outputTokens: 2, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 },
      rateLimits: { dimensions: {} }
    }),
  stream: () => Stream.empty
}

/**
 * Effect's scheduler, counting the fiber steps it is asked about (one per step
 * a fiber runs) and the tasks it runs (a fiber resumed after it suspended or
 * yielded): the work per document, which the host's load does not move.
 */
export const countingScheduler = () => {
  const steps = { ops: 0, tasks: 0 }
  const scheduler: Scheduler.Scheduler = {
    scheduleTask: (task, priority, fiber) => {
      steps.tasks++
      Scheduler.defaultScheduler.scheduleTask(task, priority, fiber)
    },
    shouldYield: (fiber) => {
      steps.ops++
      return Scheduler.defaultScheduler.shouldYield(fiber)
    }
  }
  return { steps, scheduler }
}

export const scale = (options: { readonly documents: number }) =>
  Effect.scoped(Effect.gen(function*() {
    const huge = {
      requests: { limit: 1e12, per: "1 minute" },
      inputTokens: { limit: 1e15, per: "1 minute" },
      outputTokens: { limit: 1e15, per: "1 minute" }
    } as const
    const limiter = yield* RateLimiter.make({ quotas: { "inproc/m": huge }, maxInFlight: 1_000 }).pipe(
      Effect.provide(LimiterStore.layerMemory),
      Effect.orDie
    )
    const meter = yield* Pipeline.makeMeter()
    const client = yield* Governor.make({ coalesce: false }).pipe(
      Effect.provideService(LlmClient.LlmClient, LlmClient.LlmClient.of(meter.wrap(instantProvider))),
      Effect.provideService(RateLimiter.RateLimiter, limiter),
      Effect.provideServiceEffect(TokenEstimator.TokenEstimator, TokenEstimator.make())
    )
    const baseline = process.memoryUsage().rss
    let peak = baseline
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100)
    const documents = Stream.map(
      Stream.range(1, options.documents),
      (i) => ({ id: `t${i}`, text: `tiny document ${i}` })
    )
    const started = performance.now()
    const cpu = process.cpuUsage()
    // The resident memory once the first 10,000 documents passed (tiktoken loaded, the JIT warm): the peak
    // after it says whether memory grows with the number of documents.
    const warmAt = Math.min(10_000, Math.floor(options.documents / 2))
    let warm = 0
    const counts = { succeeded: 0, other: 0 }
    const counting = countingScheduler()
    yield* Pipeline.run(documents, (doc) =>
      client.complete({
        model: "m",
        messages: [{ role: "user", content: doc.text }],
        maxOutputTokens: 4,
        metadata: { documentId: doc.id }
      }), { concurrency: 64, meter }).pipe(
        Stream.runForEach((outcome) =>
          Effect.sync(() => {
            if (outcome._tag === "Succeeded") counts.succeeded++
            else counts.other++
            if (counts.succeeded + counts.other === warmAt) warm = process.memoryUsage().rss
          })
        ),
        Effect.provide(Pipeline.layerCheckpointNone),
        Effect.withScheduler(counting.scheduler)
      )
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    clearInterval(sampler)
    // The sampler's timer may starve while the documents keep the event loop busy: the warm reading counts too.
    peak = Math.max(peak, warm, process.memoryUsage().rss)
    const mb = (bytes: number) => `${Math.round(bytes / 1_048_576)} MB`
    return `| documents | succeeded | documents per second | CPU per document | resident memory before | after ${
      warmAt.toLocaleString("en-US")
    } | peak |\n|---|---|---|---|---|---|---|\n` +
      `| ${options.documents.toLocaleString("en-US")} | ${counts.succeeded.toLocaleString("en-US")} | ${
        Math.round(options.documents / seconds).toLocaleString("en-US")
      } | ${Math.round((used.user + used.system) / options.documents)} µs | ${mb(baseline)} | ${mb(warm)} | ${
        mb(peak)
      } |\n\n` +
      `${(counting.steps.ops / options.documents).toFixed(1)} fiber steps and ${
        (counting.steps.tasks / options.documents).toFixed(2)
      } scheduler tasks a document. ` +
      "Each document passes the Governor (estimate, limiter acquire and settle, meter) 64 at a time, with no checkpoint " +
      "(`Pipeline.layerCheckpointNone`; the memory checkpoint keeps an entry per document by design, and `Pipeline/Sql` keeps them on disk)."
  }))
