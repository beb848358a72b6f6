/**
 * `@sluice/simulator`: a provider simulator for tests, benchmarks and demos,
 * its own package so that no client of `@sluice/providers` loads an HTTP
 * server, `@effect/platform-node` or `@effect/cli`. Run it with
 * `pnpm simulator` (or the `sluice-simulator` command once built).
 *
 * @since 0.1.0
 */

/**
 * An in-process simulated provider as `LlmClient`, for tests under `TestClock`.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as SimulatedClient from "./SimulatedClient.js"
/**
 * The HTTP provider simulator.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Simulator from "./Simulator.js"
