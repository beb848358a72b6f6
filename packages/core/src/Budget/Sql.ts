/**
 * The budget ledger over `@effect/sql`'s `SqlClient`: SQLite through
 * `@effect/sql-sqlite-node` keeps the day's spend across restarts, PostgreSQL
 * through `@effect/sql-pg` shares it between processes. Reached by its own
 * subpath (`@sluice/core/Budget/Sql`) so that users who never import it never
 * load `@effect/sql`.
 *
 * Two tables, created when missing:
 * - `sluice_budget_counters (name, micros, expires_at)`: a spend counter per
 *   calendar window or per slice of a rolling window (`spent|<bucket>`), and
 *   the open reservations' total per bucket (`held|<bucket>`). A reserve reads
 *   at most 62 rows per limit, however much was spent before.
 * - `sluice_budget_holds (id, bucket, micros, expires_at)`: one row per open
 *   reservation and bucket; an expired one is given back by the next reserve or
 *   usage of its bucket.
 *
 * Why it holds on PostgreSQL: a plain READ COMMITTED "sum, then insert" lets two
 * connections both pass the check (write skew). Every operation that changes a
 * bucket's reservations first takes the row lock of its `held|<bucket>` counter
 * (an UPDATE, which SQLite, serialising writers anyway, takes as a plain write),
 * in bucket order, and reads the sums after it holds every lock: under READ
 * COMMITTED each statement sees what the transactions it waited for committed.
 * A deadlock or serialization failure (with the pruning of expired rows, say) is
 * retried.
 *
 * Time is the Budget's `Clock`, passed in. Rows of past windows are pruned at
 * most once a minute of that clock per ledger.
 *
 * @example
 * ```ts
 * import { SqliteClient } from "@effect/sql-sqlite-node"
 * import { Layer } from "effect"
 * import * as BudgetSql from "@sluice/core/Budget/Sql"
 *
 * const LedgerLive = BudgetSql.layer.pipe(Layer.provide(SqliteClient.layer({ filename: "budget.db" })))
 * ```
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import {
  BudgetLedger,
  BudgetLedgerError,
  type Charge,
  counterMarginMs,
  countersAt,
  type LedgerReservation
} from "../Budget.js"

const failWith = (operation: string) => (cause: unknown) => new BudgetLedgerError({ operation, cause })

/** PostgreSQL's deadlock_detected and serialization_failure: the transaction may simply run again. */
const retryable = (error: unknown): boolean => {
  const code = (error as { readonly cause?: { readonly code?: unknown } } | undefined)?.cause?.code
  return code === "40P01" || code === "40001"
}

const heldName = (bucket: string) => `held|${bucket}`
const spentName = (counter: string) => `spent|${counter}`
const byBucket = <A extends { readonly bucket: string }>(entries: ReadonlyArray<A>): ReadonlyArray<A> =>
  [...entries].sort((a, b) => a.bucket < b.bucket ? -1 : a.bucket > b.bucket ? 1 : 0)

/**
 * Builds the ledger over the `SqlClient` in context, creating its tables if needed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<BudgetLedger["Type"], BudgetLedgerError, SqlClient.SqlClient> = Effect.gen(
  function*() {
    const sql = yield* SqlClient.SqlClient
    // Processes starting together race on PostgreSQL's CREATE ... IF NOT EXISTS (a unique violation
    // in its catalog): the loser tries again and finds the tables.
    yield* Effect.all([
      sql`CREATE TABLE IF NOT EXISTS sluice_budget_counters (name TEXT PRIMARY KEY, micros BIGINT NOT NULL, expires_at BIGINT NOT NULL)`,
      sql`CREATE INDEX IF NOT EXISTS sluice_budget_counters_expiry ON sluice_budget_counters (expires_at)`,
      sql`CREATE TABLE IF NOT EXISTS sluice_budget_holds (id TEXT NOT NULL, bucket TEXT NOT NULL, micros BIGINT NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (id, bucket))`,
      sql`CREATE INDEX IF NOT EXISTS sluice_budget_holds_expiry ON sluice_budget_holds (bucket, expires_at)`
    ], { discard: true }).pipe(Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 3 }))

    /** Takes the row lock of a bucket's reservation counter, creating it, kept at least until `keepUntil`. */
    const lock = (bucket: string, keepUntil: number) =>
      Effect.zipRight(
        sql`INSERT INTO sluice_budget_counters (name, micros, expires_at) VALUES (${
          heldName(bucket)
        }, 0, ${keepUntil}) ON CONFLICT (name) DO NOTHING`,
        sql`UPDATE sluice_budget_counters SET expires_at = CASE WHEN expires_at < ${keepUntil} THEN ${keepUntil} ELSE expires_at END WHERE name = ${
          heldName(bucket)
        }`
      )

    /** Gives back the bucket's expired holds (its counter's lock held). */
    const reclaim = (bucket: string, now: number) =>
      Effect.flatMap(
        sql<
          { micros: number | string }
        >`DELETE FROM sluice_budget_holds WHERE bucket = ${bucket} AND expires_at <= ${now} RETURNING micros`,
        (rows) =>
          rows.length === 0 ? Effect.void : Effect.asVoid(
            sql`UPDATE sluice_budget_counters SET micros = micros - ${
              rows.reduce((sum, row) => sum + Number(row.micros), 0)
            } WHERE name = ${heldName(bucket)}`
          )
      )

    /** Releases the holds of `id` in the given buckets (their counters' locks held). */
    const release = (id: string) =>
      Effect.flatMap(
        sql<
          { bucket: string; micros: number | string }
        >`DELETE FROM sluice_budget_holds WHERE id = ${id} RETURNING bucket, micros`,
        (rows) =>
          Effect.forEach(byBucket(rows), (row) =>
            sql`UPDATE sluice_budget_counters SET micros = micros - ${Number(row.micros)} WHERE name = ${
              heldName(row.bucket)
            }`, { discard: true })
      )

    const spent = (summed: ReadonlyArray<string>) =>
      Effect.map(
        sql<{ total: number | string | null }>`SELECT SUM(micros) AS total FROM sluice_budget_counters WHERE ${
          sql.in("name", summed.map(spentName))
        }`,
        (rows) => Number(rows[0]?.total ?? 0)
      )

    const held = (bucket: string) =>
      Effect.map(
        sql<{ micros: number | string }>`SELECT micros FROM sluice_budget_counters WHERE name = ${heldName(bucket)}`,
        (rows) => Number(rows[0]?.micros ?? 0)
      )

    const transaction = <A, E, R>(operation: string, self: Effect.Effect<A, E, R>) =>
      sql.withTransaction(self).pipe(
        Effect.retry({ while: retryable, schedule: Schedule.exponential("10 millis"), times: 5 }),
        Effect.mapError(failWith(operation))
      )

    let nextPrune = Number.NEGATIVE_INFINITY
    /** Deletes the counters of past windows and the holds whose counter is gone. Best effort. */
    const prune = (now: number) =>
      Effect.suspend(() => {
        if (now < nextPrune) return Effect.void
        nextPrune = now + 60_000
        return Effect.ignore(Effect.zipRight(
          sql`DELETE FROM sluice_budget_counters WHERE expires_at < ${now}`,
          sql`DELETE FROM sluice_budget_holds WHERE expires_at < ${now} AND NOT EXISTS (SELECT 1 FROM sluice_budget_counters WHERE sluice_budget_counters.name = 'held|' || sluice_budget_holds.bucket)`
        ))
      })

    const reserve = (id: string, charges: ReadonlyArray<Charge>, now: number, expiresAt: number) =>
      transaction(
        "reserve",
        Effect.gen(function*() {
          const sorted = byBucket(charges)
          for (const charge of sorted) {
            yield* lock(
              charge.bucket,
              Math.max(now + countersAt(charge.bucket, charge.counting, now).keepMs, expiresAt + counterMarginMs)
            )
          }
          for (const charge of sorted) yield* reclaim(charge.bucket, now)
          for (const charge of charges) {
            const spentMicros = yield* spent(countersAt(charge.bucket, charge.counting, now).summed)
            const reservedMicros = yield* held(charge.bucket)
            if (spentMicros + reservedMicros + charge.micros > charge.limitMicros) {
              return { _tag: "Exceeded", charge, spentMicros, reservedMicros } satisfies LedgerReservation
            }
          }
          yield* release(id)
          for (const charge of sorted) {
            yield* sql`INSERT INTO sluice_budget_holds (id, bucket, micros, expires_at) VALUES (${id}, ${charge.bucket}, ${charge.micros}, ${expiresAt})`
            yield* sql`UPDATE sluice_budget_counters SET micros = micros + ${charge.micros} WHERE name = ${
              heldName(charge.bucket)
            }`
          }
          return { _tag: "Reserved" } satisfies LedgerReservation
        })
      )

    const ledger: BudgetLedger["Type"] = {
      reserve,
      settle: (id, spend, now) =>
        transaction(
          "settle",
          Effect.gen(function*() {
            const sorted = byBucket(spend)
            for (const { bucket } of sorted) {
              yield* sql`UPDATE sluice_budget_counters SET micros = micros WHERE name = ${heldName(bucket)}`
            }
            yield* release(id)
            for (const { bucket, counting, micros } of sorted) {
              const { current, keepMs } = countersAt(bucket, counting, now)
              // The expiry is written once, by the insert; adding to the counter leaves it.
              yield* sql`INSERT INTO sluice_budget_counters (name, micros, expires_at) VALUES (${
                spentName(current)
              }, ${micros}, ${now + keepMs})
              ON CONFLICT (name) DO UPDATE SET micros = sluice_budget_counters.micros + ${micros}`
            }
            return yield* Effect.forEach(
              spend,
              ({ bucket, counting }) => spent(countersAt(bucket, counting, now).summed)
            )
          })
        ).pipe(Effect.zipLeft(prune(now))),
      cancel: (id) =>
        transaction(
          "cancel",
          Effect.gen(function*() {
            const rows = yield* sql<{ bucket: string }>`SELECT bucket FROM sluice_budget_holds WHERE id = ${id}`
            for (const { bucket } of byBucket(rows)) {
              yield* sql`UPDATE sluice_budget_counters SET micros = micros WHERE name = ${heldName(bucket)}`
            }
            yield* release(id)
          })
        ),
      usage: (bucket, counting, now) =>
        transaction(
          "read",
          Effect.gen(function*() {
            const { keepMs, summed } = countersAt(bucket, counting, now)
            yield* lock(bucket, now + keepMs)
            yield* reclaim(bucket, now)
            return { spentMicros: yield* spent(summed), reservedMicros: yield* held(bucket) }
          })
        )
    }
    // Whole milliseconds in the integer columns: a clock may answer fractions (TestClock after
    // fractional sleeps), which PostgreSQL's BIGINT refuses. An expiry is rounded up, never earlier.
    return BudgetLedger.of({
      reserve: (id, charges, now, expiresAt) => ledger.reserve(id, charges, Math.floor(now), Math.ceil(expiresAt)),
      settle: (id, spend, now) => ledger.settle(id, spend, Math.floor(now)),
      cancel: ledger.cancel,
      usage: (bucket, counting, now) => ledger.usage(bucket, counting, Math.floor(now))
    })
  }
).pipe(Effect.mapError((error) => error instanceof BudgetLedgerError ? error : failWith("create its tables")(error)))

/**
 * The ledger over the `SqlClient` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<BudgetLedger, BudgetLedgerError, SqlClient.SqlClient> = Layer.effect(BudgetLedger, make)
