/**
 * `pnpm start` / `pnpm extract --help`: the extraction job (see `extract/Cli.ts`);
 * `pnpm extract --db postgres://… [--workers N]` as a fleet, `pnpm extract status --db postgres://…`
 * its progress (docs/fleet.md).
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { cli } from "./extract/Cli.js"

// The command prints its own errors (one line, or the help for a flag that does not parse).
cli(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain({ disableErrorReporting: true }))
