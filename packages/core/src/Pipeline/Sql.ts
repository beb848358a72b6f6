/**
 * A pipeline `Checkpoint` over `@effect/sql`'s `SqlClient` (SQLite through
 * `@effect/sql-sqlite-node` survives a killed process): one row per document,
 * `sluice_checkpoint (doc_id PRIMARY KEY, status, reason, updated_at)`, created
 * when missing. Reached by its own subpath (`@sluice/core/Pipeline/Sql`).
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Checkpoint, CheckpointError, statusOf } from "../Pipeline.js"

/**
 * Builds the checkpoint over the `SqlClient` in context, creating its table if needed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Checkpoint["Type"], CheckpointError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS sluice_checkpoint (doc_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, updated_at INTEGER NOT NULL)`
  return Checkpoint.of({
    succeeded: (id) =>
      sql<{ status: string }>`SELECT status FROM sluice_checkpoint WHERE doc_id = ${id}`.pipe(
        Effect.map((rows) => rows[0]?.status === "succeeded"),
        Effect.mapError((cause) => new CheckpointError({ operation: "read", cause }))
      ),
    record: (outcome) =>
      Effect.flatMap(
        Clock.currentTimeMillis,
        (now) =>
          sql`INSERT INTO sluice_checkpoint (doc_id, status, reason, updated_at) VALUES (${outcome.id}, ${
            statusOf[outcome._tag]
          }, ${outcome._tag === "Succeeded" ? null : outcome.reason}, ${now})
            ON CONFLICT (doc_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_at = excluded.updated_at`
      ).pipe(
        Effect.asVoid,
        Effect.mapError((cause) => new CheckpointError({ operation: "record", cause }))
      )
  })
}).pipe(
  Effect.mapError((error) =>
    error instanceof CheckpointError ? error : new CheckpointError({ operation: "create its table", cause: error })
  )
)

/**
 * The checkpoint over the `SqlClient` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Checkpoint, CheckpointError, SqlClient.SqlClient> = Layer.effect(Checkpoint, make)
