/**
 * `@sluice/simulator`: a provider simulator for tests, benchmarks and demos,
 * its own package so that no client of `@sluice/providers` loads an HTTP
 * server, `@effect/platform-node` or `@effect/cli`. Run it with
 * `pnpm simulator` (or the `sluice-simulator` command once built).
 */

/** An in-process simulated provider as `LlmClient`, for tests under `TestClock`. */
export * as SimulatedClient from "./SimulatedClient.js"
/** The HTTP provider simulator. */
export * as Simulator from "./Simulator.js"
