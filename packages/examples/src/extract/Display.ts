/**
 * The job's progress, as text: a one-line bar redrawn in place on a terminal,
 * or a plain line every few seconds when the output is a file or a pipe.
 * Pure functions of a `Pipeline.Snapshot`.
 */
import { Pipeline } from "@sluice/core"
import type { Limits } from "./Summary.js"

const int = (n: number) => Math.round(n).toLocaleString("en-US")

/** 1,234 → "1.2k", 1,234,567 → "1.23M". */
export const compact = (n: number): string =>
  n >= 1_000_000
    ? `${(n / 1_000_000).toFixed(2)}M`
    : n >= 10_000
    ? `${(n / 1_000).toFixed(0)}k`
    : n >= 1_000
    ? `${(n / 1_000).toFixed(1)}k`
    : `${Math.round(n)}`

/** Seconds as `1m05s`. */
export const clock = (seconds: number): string => {
  const s = Math.max(0, Math.round(seconds))
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`
}

const share = (rate: number, limit: number) => (limit > 0 ? `${Math.round((100 * rate) / limit)}%` : "–")

/** Rates per provider minute (the simulator's minute may be shorter than a real one). */
const ratesOf = (snapshot: Pipeline.Snapshot, timeScale: number) => ({
  requests: snapshot.perMinute.requests / timeScale,
  inputTokens: snapshot.perMinute.inputTokens / timeScale,
  outputTokens: snapshot.perMinute.outputTokens / timeScale
})

/** Seconds left at the pace so far, when it can be told. */
export const eta = (snapshot: Pipeline.Snapshot): number | undefined => {
  const done = Pipeline.done(snapshot.progress) - snapshot.progress.skipped
  const left = (snapshot.total ?? 0) - Pipeline.done(snapshot.progress)
  if (done <= 0 || left <= 0 || snapshot.elapsedMillis <= 0) return undefined
  return (left * snapshot.elapsedMillis) / done / 1000
}

/** The bar redrawn on a terminal, at most `width` columns. */
export const bar = (snapshot: Pipeline.Snapshot, limits: Limits, timeScale: number, width = 120): string => {
  const p = snapshot.progress
  const total = snapshot.total ?? 0
  const done = Pipeline.done(p)
  const fraction = total > 0 ? Math.min(1, done / total) : 0
  const cells = 20
  const filled = Math.round(fraction * cells)
  const rate = ratesOf(snapshot, timeScale)
  const left = eta(snapshot)
  const parts = [
    `${"█".repeat(filled)}${"░".repeat(cells - filled)} ${int(done)}/${int(total)}`,
    `req ${compact(rate.requests)}/m ${share(rate.requests, limits.requestsPerMinute)}`,
    `in ${compact(rate.inputTokens)}/m ${share(rate.inputTokens, limits.inputTokensPerMinute)}`,
    `out ${compact(rate.outputTokens)}/m ${share(rate.outputTokens, limits.outputTokensPerMinute)}`,
    `queue ${snapshot.queue.batch + snapshot.queue.normal + snapshot.queue.interactive}`,
    `429 ${p.rateLimited}`,
    ...(p.failed + p.shed + p.overBudget > 0 ? [`failed ${p.failed + p.shed + p.overBudget}`] : []),
    `$${(p.costMicros / 1_000_000).toFixed(2)}`,
    left === undefined
      ? clock(snapshot.elapsedMillis / 1000)
      : `${clock(snapshot.elapsedMillis / 1000)} eta ${clock(left)}`
  ]
  const line = parts.join(" │ ")
  return line.length > width ? line.slice(0, width - 1) + "…" : line
}

/** A plain line for logs. */
export const line = (snapshot: Pipeline.Snapshot, limits: Limits, timeScale: number): string => {
  const p = snapshot.progress
  const rate = ratesOf(snapshot, timeScale)
  const failed = p.failed + p.shed + p.overBudget
  return [
    `[${(snapshot.elapsedMillis / 1000).toFixed(0).padStart(4)} s] ${int(Pipeline.done(p))}/${
      int(snapshot.total ?? 0)
    } documents` +
    (failed > 0 ? ` (${int(failed)} failed)` : "") + (p.skipped > 0 ? ` (${int(p.skipped)} already done)` : ""),
    `${int(rate.requests)} req/min (${share(rate.requests, limits.requestsPerMinute)} of ${
      int(limits.requestsPerMinute)
    })`,
    `${int(rate.inputTokens)} input tok/min (${share(rate.inputTokens, limits.inputTokensPerMinute)})`,
    `${int(rate.outputTokens)} output tok/min (${share(rate.outputTokens, limits.outputTokensPerMinute)})`,
    `queue batch ${snapshot.queue.batch} normal ${snapshot.queue.normal} interactive ${snapshot.queue.interactive}`,
    `429s ${p.rateLimited}, retries ${p.retries}`,
    `$${(p.costMicros / 1_000_000).toFixed(4)}`
  ].join(" · ")
}

/** What a fleet's queue holds (`Queue.Counts`), as far as the line below needs it. */
export interface QueueCounts {
  readonly documents: number
  readonly done: number
  readonly leased: number
  readonly failures: number
}

/** The line `--workers N` prints while its workers run: the queue's progress and how many workers are still at it. */
export const fleetLine = (counts: QueueCounts, elapsedSeconds: number, running: number, workers: number): string =>
  [
    `[${elapsedSeconds.toFixed(0).padStart(4)} s] ${int(counts.done)}/${int(counts.documents)} documents done` +
    (counts.failures > 0 ? ` (${int(counts.failures)} failed)` : ""),
    `${int(counts.leased)} leased`,
    `${running} of ${workers} workers running`
  ].join(" · ")
