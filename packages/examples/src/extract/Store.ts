/**
 * The job's database: one row per extracted document in `extractions`, one
 * row per document that could not be extracted in `failures`, never both
 * (a success deletes the document's failure in the same transaction). The
 * tables are the checkpoint: a rerun skips what is in `extractions` and
 * retries what is in `failures` or nowhere.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Pipeline } from "@sluice/core"
import { Clock, Context, Effect, Layer } from "effect"
import type { Extraction } from "./Extraction.js"

/** One extracted document, as stored. */
export interface ExtractionRow {
  readonly docId: string
  readonly extraction: Extraction
  readonly model: string
  readonly inputTokens: number
  readonly outputTokens: number
  readonly costUsd: number
}

/** What a failure row says. */
export interface FailureRow {
  readonly docId: string
  /** `failed`, `shed` or `over-budget`. */
  readonly outcome: string
  readonly reason: string
  readonly attempts: number
}

/** The job's tables. */
export class Store extends Context.Tag("@sluice/examples/extract/Store")<Store, {
  readonly isExtracted: (docId: string) => Effect.Effect<boolean, SqlError>
  readonly saveExtraction: (row: ExtractionRow) => Effect.Effect<void, SqlError>
  readonly saveFailure: (row: FailureRow) => Effect.Effect<void, SqlError>
  readonly counts: Effect.Effect<{ readonly extractions: number; readonly failures: number }, SqlError>
}>() {}

const iso = Effect.map(Clock.currentTimeMillis, (now) => new Date(now).toISOString())

/**
 * Creates `extractions` and `failures` when missing (SQLite and PostgreSQL
 * alike): this store and the shared work queue (`Queue.ts`) write the same rows.
 */
export const createTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS extractions (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    category TEXT NOT NULL,
    sentiment TEXT NOT NULL,
    keywords JSON NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at TEXT NOT NULL
  )`
  yield* sql`CREATE TABLE IF NOT EXISTS failures (
    doc_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error_at TEXT NOT NULL
  )`
})

/** Creates the tables when missing and builds the store over the `SqlClient` in context. */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* createTables
  return Store.of({
    isExtracted: (docId) =>
      Effect.map(sql`SELECT 1 AS found FROM extractions WHERE doc_id = ${docId}`, (rows) => rows.length > 0),
    saveExtraction: (row) =>
      Effect.flatMap(iso, (now) =>
        sql.withTransaction(Effect.zipRight(
          sql`INSERT INTO extractions (doc_id, title, summary, category, sentiment, keywords, model, input_tokens, output_tokens, cost_usd, created_at)
              VALUES (${row.docId}, ${row.extraction.title}, ${row.extraction.summary}, ${row.extraction.category}, ${row.extraction.sentiment},
                      ${
            JSON.stringify(row.extraction.keywords)
          }, ${row.model}, ${row.inputTokens}, ${row.outputTokens}, ${row.costUsd}, ${now})
              ON CONFLICT (doc_id) DO UPDATE SET title = excluded.title, summary = excluded.summary, category = excluded.category,
                sentiment = excluded.sentiment, keywords = excluded.keywords, model = excluded.model, input_tokens = excluded.input_tokens,
                output_tokens = excluded.output_tokens, cost_usd = excluded.cost_usd, created_at = excluded.created_at`,
          sql`DELETE FROM failures WHERE doc_id = ${row.docId}`
        ))),
    saveFailure: (row) =>
      Effect.flatMap(
        iso,
        (now) =>
          sql`INSERT INTO failures (doc_id, outcome, reason, attempts, last_error_at) VALUES (${row.docId}, ${row.outcome}, ${row.reason}, ${row.attempts}, ${now})
            ON CONFLICT (doc_id) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason, attempts = excluded.attempts, last_error_at = excluded.last_error_at`
      ).pipe(Effect.asVoid),
    counts: Effect.map(
      sql<
        { extractions: number; failures: number }
      >`SELECT (SELECT COUNT(*) FROM extractions) AS extractions, (SELECT COUNT(*) FROM failures) AS failures`,
      (rows) => ({ extractions: Number(rows[0]?.extractions ?? 0), failures: Number(rows[0]?.failures ?? 0) })
    )
  })
})

/** The store over the `SqlClient` in context. */
export const layer: Layer.Layer<Store, SqlError, SqlClient.SqlClient> = Layer.effect(Store, make)

const checkpointError = (operation: string) => (cause: unknown) => new Pipeline.CheckpointError({ operation, cause })

/**
 * The pipeline checkpoint over the tables: a document succeeded when it has an
 * extraction. The extraction itself is written by the job (with its content);
 * failures are written here, with their attempts.
 */
export const layerCheckpoint: Layer.Layer<Pipeline.Checkpoint, never, Store> = Layer.effect(
  Pipeline.Checkpoint,
  Effect.map(Store, (store) =>
    Pipeline.Checkpoint.of({
      succeeded: (docId) => Effect.mapError(store.isExtracted(docId), checkpointError("read")),
      record: (outcome) =>
        outcome._tag === "Succeeded"
          ? Effect.void
          : Effect.mapError(
            store.saveFailure({
              docId: outcome.id,
              outcome: Pipeline.statusOf[outcome._tag],
              reason: outcome.reason,
              attempts: outcome._tag === "Failed" ? outcome.attempts : 0
            }),
            checkpointError("record")
          )
    }))
)
