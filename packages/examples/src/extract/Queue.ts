/**
 * The job's documents as a shared work queue in the database, so that several
 * workers (processes, machines) on one database extract every document once.
 *
 * Tables (created when missing; the same statements on PostgreSQL and SQLite):
 * - `documents (id, text, problem, loaded_at, claimed_by, lease_expires_at, completed_at)`:
 *   what there is to do, loaded once (`load`, deduplicated by id), with the
 *   current claim (which worker, until when) and whether it is done.
 * - `extractions` and `failures`, exactly as the single-process `Store`
 *   (`Store.createTables`): a document's outcome is one row of one of them.
 *
 * How it holds with many workers:
 * - `claim` is one statement: it marks up to `n` open documents (not done, no
 *   claim or an expired one) as the worker's until now + lease. On PostgreSQL
 *   the candidates are picked `FOR UPDATE SKIP LOCKED`, so concurrent claimers
 *   skip each other's rows instead of queueing on them or taking them twice;
 *   SQLite serialises writers, so the same statement without the locking clause
 *   holds there.
 * - `complete` writes the outcome and ends the claim in one transaction, and
 *   only if the worker still holds the claim: the conditional update of the
 *   document row (`claimed_by = worker AND completed_at IS NULL`) takes its row
 *   lock, and PostgreSQL re-checks the condition after any wait. A worker whose
 *   lease expired and was taken over gets `NotHeld` and writes nothing; a
 *   document is never written twice (that check, and the primary keys behind it).
 *   A worker whose lease expired but which nobody took over may still complete.
 * - "Done" lives on the document row itself (`completed_at`), not only in the
 *   outcome tables: a claimer's re-check of a row it had to wait for sees the
 *   row's newest version, while a subquery over another table would see its
 *   statement's older snapshot and could hand out a finished document.
 * - A worker killed mid-batch gives its documents back when their lease
 *   expires; `release` gives them back at once (a graceful stop), and `renew`
 *   keeps a live worker's claims (documents waiting long for quota).
 *
 * Time is the caller's `Clock` (milliseconds in `lease_expires_at`), never the
 * database's `now()`, so `TestClock` drives lease expiry in tests; workers on
 * several machines need clocks that agree to well within a lease.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Effect, Layer, Redacted } from "effect"
 * import * as Queue from "./Queue.js"
 *
 * const QueueLive = Queue.layer.pipe(Layer.provide(PgClient.layer({ url: Redacted.make("postgres://…") })))
 * const oneBatch = Effect.gen(function*() {
 *   const queue = yield* Queue.WorkQueue
 *   for (const document of yield* queue.claim("host-1/4242", 8, "2 minutes")) {
 *     yield* queue.complete("host-1/4242", document.id, {
 *       _tag: "Failed",
 *       row: { docId: document.id, outcome: "failed", reason: "example", attempts: 1 }
 *     })
 *   }
 * })
 * ```
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Clock, Context, Data, Duration, Effect, Layer, Schedule, Stream } from "effect"
import type { Document } from "./Documents.js"
import { createTables, type ExtractionRow, type FailureRow } from "./Store.js"

/** A document a worker holds until `leaseExpiresAt` (milliseconds of the `Clock`). */
export interface Claimed extends Document {
  readonly leaseExpiresAt: number
}

/** What became of a document: a row of `extractions` or of `failures`. */
export type Outcome =
  | { readonly _tag: "Extracted"; readonly row: ExtractionRow }
  | { readonly _tag: "Failed"; readonly row: FailureRow }

/**
 * What `complete` did: wrote the outcome and ended the claim, or wrote nothing
 * because the worker no longer holds the document (`heldBy`: who does, if
 * anyone; `done`: whether its outcome is already written).
 */
export type Completion =
  | { readonly _tag: "Written" }
  | { readonly _tag: "NotHeld"; readonly heldBy: string | null; readonly done: boolean }

/** A claim asked for something impossible (no documents, a lease that is over at once). */
export class InvalidClaim
  extends Data.TaggedError("InvalidClaim")<{ readonly field: string; readonly reason: string }>
{
  override get message(): string {
    return `claim: ${this.field} ${this.reason}`
  }
}

/** How many documents are where. */
export interface Counts {
  readonly documents: number
  /** With an outcome (a row in `extractions` or `failures`). */
  readonly done: number
  /** Held by a worker whose lease has not expired. */
  readonly leased: number
  readonly extractions: number
  readonly failures: number
}

/** The shared queue of the job's documents. */
export class WorkQueue extends Context.Tag("@sluice/examples/extract/WorkQueue")<WorkQueue, {
  /** Adds documents not already there (by id); returns how many were new. */
  readonly load: (documents: ReadonlyArray<Document>) => Effect.Effect<number, SqlError>
  /** Takes up to `n` open documents for `worker` until now + `lease`, in id order; fewer (or none) when fewer are open. */
  readonly claim: (
    worker: string,
    n: number,
    lease: Duration.DurationInput
  ) => Effect.Effect<ReadonlyArray<Claimed>, SqlError | InvalidClaim>
  /** Writes the outcome of a document `worker` holds and ends its claim, in one transaction. */
  readonly complete: (worker: string, id: string, outcome: Outcome) => Effect.Effect<Completion, SqlError>
  /**
   * Extends to now + `lease` the claims of `ids` that `worker` still holds (a
   * heartbeat for documents that wait long for quota); returns the ids renewed.
   * An id missing from the answer was taken over or is done: drop it.
   */
  readonly renew: (
    worker: string,
    ids: ReadonlyArray<string>,
    lease: Duration.DurationInput
  ) => Effect.Effect<ReadonlyArray<string>, SqlError | InvalidClaim>
  /** Gives back, unfinished, the documents of `ids` that `worker` holds. */
  readonly release: (worker: string, ids: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  readonly counts: Effect.Effect<Counts, SqlError>
}>() {}

const iso = (millis: number) => new Date(millis).toISOString()

/** Creates the tables when missing and builds the queue over the `SqlClient` in context (PostgreSQL or SQLite). */
export const make: Effect.Effect<WorkQueue["Type"], SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  // Workers starting together race on PostgreSQL's CREATE ... IF NOT EXISTS (a unique violation
  // in its catalog): the loser tries again and finds the tables.
  yield* Effect.all([
    createTables,
    sql`CREATE TABLE IF NOT EXISTS documents (
      id TEXT PRIMARY KEY,
      text TEXT NOT NULL,
      problem TEXT,
      loaded_at TEXT NOT NULL,
      claimed_by TEXT,
      lease_expires_at BIGINT,
      completed_at TEXT
    )`,
    // Claims look only at open documents, however many are done.
    sql`CREATE INDEX IF NOT EXISTS documents_open ON documents (id) WHERE completed_at IS NULL`
  ], { discard: true }).pipe(Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 5 }))

  const load = (documents: ReadonlyArray<Document>) =>
    documents.length === 0 ? Effect.succeed(0) : Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.map(
        sql<{ id: string }>`INSERT INTO documents ${
          sql.insert(documents.map((document) => ({
            id: document.id,
            text: document.text,
            problem: document.problem ?? null,
            loaded_at: iso(now)
          })))
        } ON CONFLICT (id) DO NOTHING RETURNING id`,
        (rows) => rows.length
      ))

  /** Now and the end of a lease starting now, or why the lease is not one. */
  const leaseFrom = (lease: Duration.DurationInput) =>
    Effect.gen(function*() {
      const leaseMillis = Duration.toMillis(Duration.decode(lease))
      if (!(leaseMillis > 0) || !Number.isFinite(leaseMillis)) {
        return yield* new InvalidClaim({ field: "lease", reason: `must be a finite duration above 0, got ${lease}` })
      }
      // Whole milliseconds: the column is an integer (TestClock's time may have fractions).
      const now = Math.floor(yield* Clock.currentTimeMillis)
      return { now, leaseExpiresAt: now + Math.ceil(leaseMillis) }
    })

  const claim = (worker: string, n: number, lease: Duration.DurationInput) =>
    Effect.gen(function*() {
      if (!Number.isInteger(n) || n < 1) {
        return yield* new InvalidClaim({ field: "n", reason: `must be a whole number above 0, got ${n}` })
      }
      const { leaseExpiresAt, now } = yield* leaseFrom(lease)
      const open = sql`SELECT id FROM documents
        WHERE completed_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= ${now})
        ORDER BY id LIMIT ${n}`
      const rows = yield* sql<{ id: string; text: string; problem: string | null }>`UPDATE documents
        SET claimed_by = ${worker}, lease_expires_at = ${leaseExpiresAt}
        WHERE id IN (${sql.onDialectOrElse({ pg: () => sql`${open} FOR UPDATE SKIP LOCKED`, orElse: () => open })})
        RETURNING id, text, problem`
      // In id order, as they were picked (UPDATE ... RETURNING promises no order).
      return [...rows].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0).map((row): Claimed => ({
        id: row.id,
        text: row.text,
        ...(row.problem === null ? {} : { problem: row.problem }),
        leaseExpiresAt
      }))
    })

  const write = (outcome: Outcome, now: string) =>
    outcome._tag === "Extracted"
      ? sql`INSERT INTO extractions (doc_id, title, summary, category, sentiment, keywords, model, input_tokens, output_tokens, cost_usd, created_at)
          VALUES (${outcome.row.docId}, ${outcome.row.extraction.title}, ${outcome.row.extraction.summary}, ${outcome.row.extraction.category},
                  ${outcome.row.extraction.sentiment}, ${
        JSON.stringify(outcome.row.extraction.keywords)
      }, ${outcome.row.model}, ${outcome.row.inputTokens},
                  ${outcome.row.outputTokens}, ${outcome.row.costUsd}, ${now})`
      : sql`INSERT INTO failures (doc_id, outcome, reason, attempts, last_error_at)
          VALUES (${outcome.row.docId}, ${outcome.row.outcome}, ${outcome.row.reason}, ${outcome.row.attempts}, ${now})`

  const complete = (worker: string, id: string, outcome: Outcome) =>
    Effect.gen(function*() {
      if (outcome.row.docId !== id) {
        return yield* Effect.dieMessage(`WorkQueue.complete: the outcome of ${outcome.row.docId} given for ${id}`)
      }
      const now = iso(yield* Clock.currentTimeMillis)
      const ended = yield* sql<{ id: string }>`UPDATE documents
        SET completed_at = ${now}, claimed_by = NULL, lease_expires_at = NULL
        WHERE id = ${id} AND claimed_by = ${worker} AND completed_at IS NULL
        RETURNING id`
      if (ended.length === 0) {
        const rows = yield* sql<
          { claimed_by: string | null; completed_at: string | null }
        >`SELECT claimed_by, completed_at
          FROM documents WHERE id = ${id}`
        return {
          _tag: "NotHeld",
          heldBy: rows[0]?.claimed_by ?? null,
          done: rows[0] !== undefined && rows[0].completed_at !== null
        } satisfies Completion
      }
      yield* write(outcome, now)
      return { _tag: "Written" } satisfies Completion
    }).pipe(sql.withTransaction)

  const renew = (worker: string, ids: ReadonlyArray<string>, lease: Duration.DurationInput) =>
    Effect.gen(function*() {
      const { leaseExpiresAt } = yield* leaseFrom(lease)
      if (ids.length === 0) return []
      const rows = yield* sql<{ id: string }>`UPDATE documents SET lease_expires_at = ${leaseExpiresAt}
        WHERE claimed_by = ${worker} AND completed_at IS NULL AND ${sql.in("id", ids)}
        RETURNING id`
      return rows.map((row) => row.id)
    })

  const release = (worker: string, ids: ReadonlyArray<string>) =>
    ids.length === 0 ? Effect.void : Effect.asVoid(
      sql`UPDATE documents SET claimed_by = NULL, lease_expires_at = NULL
        WHERE claimed_by = ${worker} AND completed_at IS NULL AND ${sql.in("id", ids)}`
    )

  const counts = Effect.flatMap(Effect.map(Clock.currentTimeMillis, Math.floor), (now) =>
    Effect.map(
      sql<Record<keyof Counts, number | string>>`SELECT
        (SELECT COUNT(*) FROM documents) AS documents,
        (SELECT COUNT(*) FROM documents WHERE completed_at IS NOT NULL) AS done,
        (SELECT COUNT(*) FROM documents WHERE completed_at IS NULL AND claimed_by IS NOT NULL AND lease_expires_at > ${now}) AS leased,
        (SELECT COUNT(*) FROM extractions) AS extractions,
        (SELECT COUNT(*) FROM failures) AS failures`,
      (rows): Counts => ({
        documents: Number(rows[0]?.documents ?? 0),
        done: Number(rows[0]?.done ?? 0),
        leased: Number(rows[0]?.leased ?? 0),
        extractions: Number(rows[0]?.extractions ?? 0),
        failures: Number(rows[0]?.failures ?? 0)
      })
    ))

  return WorkQueue.of({ load, claim, complete, renew, release, counts })
})

/** The queue over the `SqlClient` in context: `PgClient.layer` for many workers, `SqliteClient.layer` for one process. */
export const layer: Layer.Layer<WorkQueue, SqlError, SqlClient.SqlClient> = Layer.effect(WorkQueue, make)

/** Loads a stream of documents into the queue `batch` at a time (default 500); returns how many were new. */
export const loadAll = <E, R>(
  documents: Stream.Stream<Document, E, R>,
  batch = 500
): Effect.Effect<number, E | SqlError, WorkQueue | R> =>
  Effect.flatMap(WorkQueue, (queue) =>
    documents.pipe(
      Stream.grouped(batch),
      Stream.runFoldEffect(
        0,
        (total, chunk) => Effect.map(queue.load(Chunk.toReadonlyArray(chunk)), (loaded) => total + loaded)
      )
    ))
