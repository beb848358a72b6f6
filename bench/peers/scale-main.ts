/**
 * Scenario 6 in a process of its own: `node --import tsx --conditions=@sluice/source bench/peers/scale-main.ts N`
 * prints the table as one JSON string on its last line. The harness (`bench/run.ts`) holds the simulator, the
 * other scenarios' modules and @effect/cli, about 200 MB that the scenario's resident memory should not count.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { scale } from "./scale.js"

const documents = Number(process.argv[2] ?? 50_000)
NodeRuntime.runMain(Effect.flatMap(scale({ documents }), (table) => Console.log(JSON.stringify(table))))
