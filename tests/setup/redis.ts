/**
 * Vitest global setup: the Redis tests need a server. Use the one at REDIS_URL
 * (default redis://127.0.0.1:6379) if it answers; otherwise start `redis-server`
 * on a free port for this run, point REDIS_URL at it, and stop it at the end.
 */
import { spawn } from "node:child_process"
import { createConnection, createServer } from "node:net"

const answers = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port })
    socket.once("connect", () => (socket.end(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

export default async function setup() {
  const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379")
  if (await answers(url.hostname, Number(url.port || 6379))) return
  const port = await freePort()
  const child = spawn("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no"
  ], { stdio: "ignore" })
  child.on("error", () => {
    // No redis-server on this machine: the Redis tests will say they cannot connect.
  })
  for (let i = 0; i < 50 && !(await answers("127.0.0.1", port)); i++) await new Promise((r) => setTimeout(r, 100))
  process.env.REDIS_URL = `redis://127.0.0.1:${port}`
  return () => {
    child.kill("SIGKILL")
  }
}
