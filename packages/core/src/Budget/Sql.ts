/**
 * The budget ledger over `@effect/sql`'s `SqlClient`: SQLite through
 * `@effect/sql-sqlite-node` keeps the day's spend across restarts, and any other
 * engine `@effect/sql` speaks works the same way. Reached by its own subpath
 * (`@sluice/core/Budget/Sql`) so that users who never import it never load
 * `@effect/sql`.
 *
 * Two tables, created when missing: `sluice_budget_events (bucket, at, micros)`
 * and `sluice_budget_reservations (id, bucket, micros)`. A reservation checks
 * and writes every charge in one transaction.
 *
 * @example
 * ```ts
 * import { SqliteClient } from "@effect/sql-sqlite-node"
 * import * as BudgetSql from "@sluice/core/Budget/Sql"
 *
 * const LedgerLive = BudgetSql.layer.pipe(Layer.provide(SqliteClient.layer({ filename: "budget.db" })))
 * ```
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { BudgetLedger, BudgetLedgerError, type LedgerReservation } from "../Budget.js"

const failWith = (operation: string) => (cause: unknown) => new BudgetLedgerError({ operation, cause })

/** Builds the ledger over the `SqlClient` in context, creating its tables if needed. */
export const make: Effect.Effect<BudgetLedger["Type"], BudgetLedgerError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS sluice_budget_events (bucket TEXT NOT NULL, at INTEGER NOT NULL, micros INTEGER NOT NULL)`
  yield* sql`CREATE INDEX IF NOT EXISTS sluice_budget_events_bucket ON sluice_budget_events (bucket, at)`
  yield* sql`CREATE TABLE IF NOT EXISTS sluice_budget_reservations (id TEXT NOT NULL, bucket TEXT NOT NULL, micros INTEGER NOT NULL)`

  const usage = (bucket: string, sinceMs: number) =>
    Effect.gen(function*() {
      const spent = yield* sql<{ total: number | null }>`SELECT SUM(micros) AS total FROM sluice_budget_events WHERE bucket = ${bucket} AND at >= ${sinceMs}`
      const reserved = yield* sql<{ total: number | null }>`SELECT SUM(micros) AS total FROM sluice_budget_reservations WHERE bucket = ${bucket}`
      return { spentMicros: Number(spent[0]?.total ?? 0), reservedMicros: Number(reserved[0]?.total ?? 0) }
    })

  return BudgetLedger.of({
    reserve: (id, charges) =>
      sql.withTransaction(Effect.gen(function*() {
        for (const charge of charges) {
          const { reservedMicros, spentMicros } = yield* usage(charge.bucket, charge.sinceMs)
          if (spentMicros + reservedMicros + charge.micros > charge.limitMicros) {
            return { _tag: "Exceeded", charge, spentMicros, reservedMicros } satisfies LedgerReservation
          }
        }
        for (const charge of charges) {
          yield* sql`INSERT INTO sluice_budget_reservations (id, bucket, micros) VALUES (${id}, ${charge.bucket}, ${charge.micros})`
        }
        return { _tag: "Reserved" } satisfies LedgerReservation
      })).pipe(Effect.mapError(failWith("reserve"))),
    settle: (id, spend, now) =>
      sql.withTransaction(Effect.gen(function*() {
        yield* sql`DELETE FROM sluice_budget_reservations WHERE id = ${id}`
        for (const { bucket, micros } of spend) {
          yield* sql`INSERT INTO sluice_budget_events (bucket, at, micros) VALUES (${bucket}, ${now}, ${micros})`
        }
      })).pipe(Effect.mapError(failWith("settle"))),
    cancel: (id) => sql`DELETE FROM sluice_budget_reservations WHERE id = ${id}`.pipe(Effect.asVoid, Effect.mapError(failWith("cancel"))),
    usage: (bucket, sinceMs) => usage(bucket, sinceMs).pipe(Effect.mapError(failWith("read")))
  })
}).pipe(Effect.mapError((error) => error instanceof BudgetLedgerError ? error : failWith("create its tables")(error)))

/** The ledger over the `SqlClient` in context. */
export const layer: Layer.Layer<BudgetLedger, BudgetLedgerError, SqlClient.SqlClient> = Layer.effect(BudgetLedger, make)
