/**
 * Vitest global setup: the PostgreSQL tests need a server. It must answer at
 * DATABASE_URL / PG_URL (default postgres://postgres@127.0.0.1:5432/postgres);
 * when it does not, the run fails here, saying so, rather than the ledger's
 * PostgreSQL contract passing on a fallback. `.ci/run` starts one when the
 * machine has none.
 */
import { createConnection } from "node:net"

export const postgresUrl = () =>
  process.env.DATABASE_URL ?? process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const answers = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port })
    socket.setTimeout(2_000, () => (socket.destroy(), resolve(false)))
    socket.once("connect", () => (socket.end(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

export default async function setup() {
  const url = new URL(postgresUrl())
  const port = Number(url.port || 5432)
  if (!(await answers(url.hostname, port))) {
    throw new Error(
      `PostgreSQL does not answer at ${url.hostname}:${port} (DATABASE_URL / PG_URL, default postgres://postgres@127.0.0.1:5432/postgres): ` +
        "the budget ledger's PostgreSQL tests need it. Start one (bash .ci/run does) or point DATABASE_URL at one."
    )
  }
}
