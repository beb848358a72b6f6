/**
 * One view of a fleet of workers (see `Job.Fleet`): each worker records its
 * progress in the queue's database, so that `status` reads the whole fleet
 * from any machine and `report` merges every worker's samples into the run's.
 *
 * Tables (created when missing; the same statements on PostgreSQL and SQLite):
 * - `workers`: one row per worker (its id, host, pid, when it started, was last
 *   seen and finished, its time scale, and its cumulative counters), upserted
 *   by the worker at most once a second while it runs and once at its end.
 * - `fleet_samples`: the same counters (and its limiter queue and calls in
 *   flight) per worker and instant, for the report.
 *
 * Times are milliseconds of the workers' `Clock` (as the queue's leases), so
 * `TestClock` drives them in tests; a worker's counters are its own (documents
 * it wrote an outcome for, calls it made), so the fleet's are their sums.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Duration, Effect, Schedule } from "effect"
import { clock } from "./Display.js"
import * as Queue from "./Queue.js"
import type { Limits, Sample, Summary } from "./Summary.js"

/** What a worker counted so far (cumulative since it started). */
export interface Counters {
  /** Calls the provider answered. */
  readonly requests: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly http429: number
  readonly http529: number
  readonly retries: number
  /** Documents whose outcome this worker wrote: extracted, failed, shed, over budget. */
  readonly succeeded: number
  readonly failed: number
  readonly shed: number
  readonly overBudget: number
  /** Documents this worker processed after its lease expired and another worker took over (nothing written). */
  readonly notHeld: number
  readonly costUsd: number
}

/** Counters at zero. */
export const zero: Counters = {
  requests: 0,
  inputTokens: 0,
  outputTokens: 0,
  http429: 0,
  http529: 0,
  retries: 0,
  succeeded: 0,
  failed: 0,
  shed: 0,
  overBudget: 0,
  notHeld: 0,
  costUsd: 0
}

const names = Object.keys(zero) as ReadonlyArray<keyof Counters>

/** Documents with an outcome written, from counters. */
export const doneOf = (counters: Counters): number =>
  counters.succeeded + counters.failed + counters.shed + counters.overBudget

/** The sum of counters. */
export const sum = (all: ReadonlyArray<Counters>): Counters =>
  Object.fromEntries(names.map((name) => [name, all.reduce((total, c) => total + c[name], 0)])) as unknown as Counters

/** One worker as the `workers` table has it. */
export interface Worker extends Counters {
  readonly worker: string
  readonly host: string
  readonly pid: number
  /** Milliseconds of the worker's `Clock`. */
  readonly startedAt: number
  readonly seenAt: number
  readonly finishedAt: number | undefined
  /** How much faster than real time its provider's minute ran. */
  readonly timeScale: number
}

/** What a worker records at one instant. */
export interface Entry {
  readonly worker: string
  readonly host: string
  readonly pid: number
  readonly startedAt: number
  /** Now, in milliseconds of the `Clock`. */
  readonly at: number
  readonly timeScale: number
  readonly counters: Counters
  /** Calls waiting in the limiter, by class, and calls holding a permit. */
  readonly queue: Sample["queue"]
  readonly inFlight: number
  /** Its last entry: the worker is done. */
  readonly finished?: boolean | undefined
}

const columns = {
  requests: "requests",
  inputTokens: "input_tokens",
  outputTokens: "output_tokens",
  http429: "http429",
  http529: "http529",
  retries: "retries",
  succeeded: "succeeded",
  failed: "failed",
  shed: "shed",
  overBudget: "over_budget",
  notHeld: "not_held",
  costUsd: "cost_usd"
} as const satisfies Record<keyof Counters, string>

const counterColumns = names.map((name) =>
  `${columns[name]} ${name === "costUsd" ? "DOUBLE PRECISION" : "BIGINT"} NOT NULL DEFAULT 0`
).join(",\n  ")

/** Creates `workers` and `fleet_samples` when missing. */
export const createTables: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Workers starting together race on PostgreSQL's CREATE ... IF NOT EXISTS: the loser tries again.
  yield* Effect.all([
    sql.unsafe(`CREATE TABLE IF NOT EXISTS workers (
  worker TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid BIGINT NOT NULL,
  started_at BIGINT NOT NULL,
  seen_at BIGINT NOT NULL,
  finished_at BIGINT,
  time_scale DOUBLE PRECISION NOT NULL DEFAULT 1,
  ${counterColumns}
)`),
    sql.unsafe(`CREATE TABLE IF NOT EXISTS fleet_samples (
  worker TEXT NOT NULL,
  at BIGINT NOT NULL,
  queue_interactive BIGINT NOT NULL DEFAULT 0,
  queue_normal BIGINT NOT NULL DEFAULT 0,
  queue_batch BIGINT NOT NULL DEFAULT 0,
  in_flight BIGINT NOT NULL DEFAULT 0,
  ${counterColumns},
  PRIMARY KEY (worker, at)
)`)
  ], { discard: true }).pipe(Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 5 }))
})

const counterValues = (counters: Counters) => Object.fromEntries(names.map((name) => [columns[name], counters[name]]))

/**
 * Upserts the worker's row and adds a sample (the tables must exist:
 * {@link createTables}). A worker's row holds its latest entry.
 */
export const record = (entry: Entry): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // Whole milliseconds: the columns are integers (TestClock's time may have fractions).
    const at = Math.floor(entry.at)
    const update = [
      "host",
      "pid",
      "started_at",
      "seen_at",
      "finished_at",
      "time_scale",
      ...names.map((n) => columns[n])
    ]
      .map((column) => `${column} = excluded.${column}`).join(", ")
    yield* sql`INSERT INTO workers ${
      sql.insert({
        worker: entry.worker,
        host: entry.host,
        pid: entry.pid,
        started_at: Math.floor(entry.startedAt),
        seen_at: at,
        finished_at: entry.finished === true ? at : null,
        time_scale: entry.timeScale,
        ...counterValues(entry.counters)
      })
    } ON CONFLICT (worker) DO UPDATE SET ${sql.unsafe(update)}`
    const sampleUpdate = [
      "queue_interactive",
      "queue_normal",
      "queue_batch",
      "in_flight",
      ...names.map((n) => columns[n])
    ]
      .map((column) => `${column} = excluded.${column}`).join(", ")
    yield* sql`INSERT INTO fleet_samples ${
      sql.insert({
        worker: entry.worker,
        at,
        queue_interactive: entry.queue.interactive,
        queue_normal: entry.queue.normal,
        queue_batch: entry.queue.batch,
        in_flight: entry.inFlight,
        ...counterValues(entry.counters)
      })
    } ON CONFLICT (worker, at) DO UPDATE SET ${sql.unsafe(sampleUpdate)}`
  })

type Row = Record<string, string | number | null>

const countersOf = (row: Row): Counters =>
  Object.fromEntries(names.map((name) => [name, Number(row[columns[name]] ?? 0)])) as unknown as Counters

const workerOf = (row: Row): Worker => ({
  worker: String(row.worker),
  host: String(row.host),
  pid: Number(row.pid),
  startedAt: Number(row.started_at),
  seenAt: Number(row.seen_at),
  finishedAt: row.finished_at === null || row.finished_at === undefined ? undefined : Number(row.finished_at),
  timeScale: Number(row.time_scale ?? 1),
  ...countersOf(row)
})

/** Rates per (wall) minute. */
export interface Rates {
  readonly requests: number
  readonly inputTokens: number
  readonly outputTokens: number
}

/** The fleet at one instant. */
export interface Status {
  /** When it was read, in milliseconds of the `Clock`. */
  readonly at: number
  /** The queue: documents, done, leased, extractions, failures. */
  readonly counts: Queue.Counts
  /** Every worker that recorded itself, by id. */
  readonly workers: ReadonlyArray<Worker>
  /** The sums of the workers' counters. */
  readonly totals: Counters
  /** When the first worker started (none: no worker recorded itself yet). */
  readonly startedAt: number | undefined
  /** When the last worker finished, once all have. */
  readonly finishedAt: number | undefined
  /** Calls and tokens per wall minute: over the trailing minute (to `at`), and since the first worker started. */
  readonly perMinute: { readonly trailingMinute: Rates; readonly sinceStart: Rates }
}

const rates = (counters: Counters, minutes: number): Rates =>
  minutes > 0
    ? {
      requests: counters.requests / minutes,
      inputTokens: counters.inputTokens / minutes,
      outputTokens: counters.outputTokens / minutes
    }
    : { requests: 0, inputTokens: 0, outputTokens: 0 }

/** The fleet's progress: the queue's counts, every worker's row, their totals and throughput. */
export const status: Effect.Effect<Status, SqlError, SqlClient.SqlClient | Queue.WorkQueue> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const queue = yield* Queue.WorkQueue
  yield* createTables
  const at = Math.floor(yield* Clock.currentTimeMillis)
  const counts = yield* queue.counts
  const workers = (yield* sql<Row>`SELECT * FROM workers ORDER BY worker`).map(workerOf)
  const totals = sum(workers)
  const startedAt = workers.length === 0 ? undefined : Math.min(...workers.map((w) => w.startedAt))
  const finishedAt = workers.length > 0 && workers.every((w) => w.finishedAt !== undefined)
    ? Math.max(...workers.map((w) => w.finishedAt ?? 0))
    : undefined
  // Each worker's counters a minute ago: its latest sample then (none: it had not started).
  const cutoff = at - 60_000
  const before = (yield* sql<Row>`SELECT s.* FROM fleet_samples s
    JOIN (SELECT worker, MAX(at) AS at FROM fleet_samples WHERE at <= ${cutoff} GROUP BY worker) m
    ON s.worker = m.worker AND s.at = m.at`).map(countersOf)
  const end = Math.min(at, finishedAt ?? at)
  const windowMinutes = startedAt === undefined ? 0 : Math.min(60_000, Math.max(0, at - startedAt)) / 60_000
  const previous = sum(before)
  const gained = Object.fromEntries(names.map((name) => [name, totals[name] - previous[name]])) as unknown as Counters
  return {
    at,
    counts,
    workers,
    totals,
    startedAt,
    finishedAt,
    perMinute: {
      trailingMinute: rates(gained, windowMinutes),
      sinceStart: rates(totals, startedAt === undefined ? 0 : Math.max(0, end - startedAt) / 60_000)
    }
  } satisfies Status
})

const n = (x: number) => Math.round(x).toLocaleString("en-US")
const percentOf = (part: number, whole: number) => whole > 0 ? `${Math.round((100 * part) / whole)} %` : "0 %"
const age = (millis: number) => clock(Math.max(0, millis) / 1000)

/** Options of {@link renderStatus}. */
export interface RenderOptions {
  /** The quota, per provider minute, to show the rates against. */
  readonly limits: Limits
  /** How much faster than real time the provider's minute runs (the simulator's speed); 1 for a real provider. */
  readonly timeScale: number
  /** A worker not seen for longer than this is marked stale. Default the workers' default lease, 2 minutes. */
  readonly lease?: Duration.DurationInput | undefined
}

/**
 * The fleet's status in a few plain lines: progress, throughput per provider
 * minute against the limits, and one line per worker with its last-seen age
 * (stale when not seen for more than a lease).
 */
export const renderStatus = (status: Status, options: RenderOptions): string => {
  const { counts, totals } = status
  const leaseMillis = Duration.toMillis(Duration.decode(options.lease ?? "2 minutes"))
  const scale = options.timeScale > 0 ? options.timeScale : 1
  const unit = scale === 1 ? "minute" : `provider minute (simulator at ${scale}× speed)`
  const against = (rates: Rates) =>
    `${n(rates.requests / scale)} of ${n(options.limits.requestsPerMinute)} requests, ` +
    `${n(rates.inputTokens / scale)} of ${n(options.limits.inputTokensPerMinute)} input tokens, ` +
    `${n(rates.outputTokens / scale)} of ${n(options.limits.outputTokensPerMinute)} output tokens`
  const stateOf = (worker: Worker) =>
    worker.finishedAt !== undefined
      ? `finished ${age(status.at - worker.finishedAt)} ago`
      : status.at - worker.seenAt > leaseMillis
      ? `STALE: not seen for ${age(status.at - worker.seenAt)} (more than a lease)`
      : `running, seen ${age(status.at - worker.seenAt)} ago`
  const running = status.workers.filter((w) => w.finishedAt === undefined && status.at - w.seenAt <= leaseMillis)
  const lines = [
    `fleet: ${n(counts.done)} / ${n(counts.documents)} documents done (${percentOf(counts.done, counts.documents)}), ` +
    `${n(counts.leased)} leased, ${n(counts.extractions)} extracted, ${n(counts.failures)} failures; ` +
    `${status.workers.length} workers (${running.length} running)`,
    `last minute, per ${unit}: ${against(status.perMinute.trailingMinute)}` +
    // A window that holds the run's start holds the full bucket the quota starts with, which goes at once.
    (status.startedAt !== undefined && (status.finishedAt ?? status.at) - status.startedAt < 60_000
      ? " (this minute holds the start: the quota's bucket starts full and may go at once, so the rate can read above the limits)"
      : ""),
    `since the start${
      status.startedAt === undefined ? "" : ` (${age((status.finishedAt ?? status.at) - status.startedAt)})`
    }, per ${unit}: ${against(status.perMinute.sinceStart)}`,
    `${n(totals.requests)} requests, ${n(totals.http429)} × 429, ${n(totals.http529)} × 529, ${
      n(totals.retries)
    } retries, $${totals.costUsd.toFixed(4)}` +
    (totals.notHeld > 0 ? `; ${n(totals.notHeld)} documents finished by another worker after a lease expired` : ""),
    ...status.workers.map((worker) =>
      `  ${worker.worker}: ${stateOf(worker)}; ${n(doneOf(worker))} done (${n(worker.succeeded)} extracted, ${
        n(worker.failed + worker.shed + worker.overBudget)
      } failures), ${n(worker.requests)} requests, ${n(worker.http429)} × 429, $${worker.costUsd.toFixed(4)}`
    )
  ]
  return lines.join("\n")
}

interface SampleRow extends Counters {
  readonly at: number
  readonly queue: Sample["queue"]
  readonly inFlight: number
}

/** At most this many merged samples in a report (a step of at least a second between them). */
const maxSteps = 3_600

/**
 * The whole run as one: every worker's samples merged into the fleet's (at
 * each step, the sum of each worker's latest cumulative counters, and of the
 * queues and calls in flight of the workers still running), and the summary
 * over the fleet, for `Report.render`.
 */
export const report: Effect.Effect<
  { readonly samples: ReadonlyArray<Sample>; readonly summary: Summary },
  SqlError,
  SqlClient.SqlClient | Queue.WorkQueue
> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const now = yield* status
  const rows = yield* sql<Row>`SELECT * FROM fleet_samples ORDER BY worker, at`
  const byWorker = new Map<string, Array<SampleRow>>()
  for (const row of rows) {
    const list = byWorker.get(String(row.worker)) ?? []
    list.push({
      ...countersOf(row),
      at: Number(row.at),
      queue: {
        interactive: Number(row.queue_interactive ?? 0),
        normal: Number(row.queue_normal ?? 0),
        batch: Number(row.queue_batch ?? 0)
      },
      inFlight: Number(row.in_flight ?? 0)
    })
    byWorker.set(String(row.worker), list)
  }
  const timeScale = now.workers[0]?.timeScale ?? 1
  const start = now.startedAt ?? 0
  const last = Math.max(start, ...rows.map((row) => Number(row.at)))
  const span = last - start
  const step = Math.max(1_000, Math.ceil(span / maxSteps))
  const steps = Array.from({ length: Math.floor(span / step) + 1 }, (_, i) => start + i * step)
  if (steps.at(-1) !== last) steps.push(last)
  const series = [...byWorker.values()]
  const cursors = series.map(() => -1)
  const samples: Array<Sample> = rows.length === 0 ? [] : steps.map((t) => {
    const latest: Array<Counters> = []
    let interactive = 0
    let normal = 0
    let batch = 0
    let inFlight = 0
    series.forEach((list, w) => {
      while (cursors[w]! + 1 < list.length && list[cursors[w]! + 1]!.at <= t) cursors[w]!++
      const sample = list[cursors[w]!]
      if (sample === undefined) return
      latest.push(sample)
      // Gauges only while the worker runs (its last sample is its end).
      if (cursors[w]! < list.length - 1 || sample.at === t) {
        interactive += sample.queue.interactive
        normal += sample.queue.normal
        batch += sample.queue.batch
        inFlight += sample.inFlight
      }
    })
    const total = sum(latest)
    const atSeconds = (t - start) / 1000
    return {
      atSeconds,
      quotaMinutes: (atSeconds / 60) * timeScale,
      requests: total.requests,
      inputTokens: total.inputTokens,
      outputTokens: total.outputTokens,
      queue: { interactive, normal, batch },
      inFlight,
      done: doneOf(total),
      http429: total.http429,
      http529: total.http529,
      retries: total.retries,
      costUsd: total.costUsd
    } satisfies Sample
  })
  const totals = now.totals
  const wallSeconds = span / 1000
  const quotaMinutes = (wallSeconds / 60) * timeScale
  const perMinute = (x: number) => quotaMinutes > 0 ? x / quotaMinutes : 0
  const summary: Summary = {
    documents: now.counts.documents,
    succeeded: totals.succeeded,
    failed: totals.failed,
    shed: totals.shed,
    overBudget: totals.overBudget,
    skipped: 0,
    http429: totals.http429,
    http529: totals.http529,
    retries: totals.retries,
    inputTokens: totals.inputTokens,
    outputTokens: totals.outputTokens,
    costUsd: totals.costUsd,
    wallSeconds,
    requestsPerMinute: perMinute(totals.requests),
    inputTokensPerMinute: perMinute(totals.inputTokens),
    outputTokensPerMinute: perMinute(totals.outputTokens),
    interrupted: now.counts.done < now.counts.documents
  }
  return { samples, summary }
})
