/**
 * One contender in its own process (so that no contender shares an event loop
 * or a heap with the simulator or another contender). Given its settings as
 * JSON in argv[2], it rebuilds its share of the workload, runs, and prints its
 * result as one JSON line.
 */
import { Effect } from "effect"
import { type Limits, type RunContext, workload } from "./common.js"
import { type ContenderName, contenders } from "./contenders.js"

export interface WorkerInput {
  readonly contender: ContenderName
  readonly baseURL: string
  readonly apiKey: string
  readonly docs: number
  readonly seed: number
  /** This process's share of the documents: every `of`-th from `index`. */
  readonly shard: { readonly index: number; readonly of: number }
  readonly limits: Limits
  readonly timeScale: number
  readonly deadlineMs: number
  readonly interactive?: RunContext["interactive"]
  readonly redis?: RunContext["redis"]
}

const input = JSON.parse(process.argv[2] ?? "{}") as WorkerInput
const all = await Effect.runPromise(workload(input.docs, input.seed))
const docs = all.filter((_, i) => i % input.shard.of === input.shard.index)
const result = await contenders[input.contender]({
  baseURL: input.baseURL,
  apiKey: input.apiKey,
  docs,
  limits: input.limits,
  timeScale: input.timeScale,
  deadlineMs: input.deadlineMs,
  interactive: input.interactive,
  redis: input.redis
})
process.stdout.write(`${JSON.stringify(result)}\n`)
process.exit(0)
