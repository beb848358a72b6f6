/**
 * A PostgreSQL database of a test file's own: created before its tests and
 * dropped after them, on the server of `postgresUrl()`. Imports the pg-pool
 * workaround (`pgPool.ts`) before `@effect/sql-pg`.
 */
import "./pgPool.js"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Redacted } from "effect"
import { afterAll, beforeAll } from "vitest"
import { postgresUrl } from "./postgres.js"

const { PgClient } = await import("@effect/sql-pg")

/** Registers the database's creation and drop with the file's hooks; answers its URL. */
export const databasePerRun = (name: string): URL => {
  const admin = new URL(postgresUrl())
  const database = `sluice_${name}_test_${process.pid}_${Date.now()}`
  const url = new URL(admin)
  url.pathname = `/${database}`
  const adminSql = (statement: string) =>
    Effect.runPromise(
      Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement))).pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(admin.toString()) }))
      )
    )
  beforeAll(() => adminSql(`CREATE DATABASE ${database}`))
  afterAll(() => adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))
  return url
}
