/**
 * What every contender of the side-by-side benchmark shares: the workload
 * (the extraction job's synthetic documents, fixed seed), the request each
 * document becomes, the least time the quota allows for it (the ideal), and
 * the shape of a contender's run and result.
 */
import { syntheticSource } from "@sluice/examples/extract/Documents"
import * as Extraction from "@sluice/examples/extract/Extraction"
import type { Limits } from "@sluice/examples/extract/Summary"
import { Anthropic } from "@sluice/providers"
import { Chunk, Effect, Stream } from "effect"
// The simulator's own count and answer, reached past its public surface: the ideal needs what it will charge.
import * as Answers from "../../packages/simulator/src/internal/answers.js"
import * as Tokens from "../../packages/simulator/src/internal/tokens.js"

export type { Limits }

export const MODEL = "claude-haiku-4-5"

export interface Doc {
  readonly id: string
  readonly text: string
}

/** `count` documents of the fixed seed. */
export const workload = (count: number, seed = 2026): Effect.Effect<ReadonlyArray<Doc>> =>
  Effect.map(Stream.runCollect(Stream.orDie(syntheticSource(count, seed).documents)), Chunk.toReadonlyArray)

/** The SDK parameters of a document's extraction call (what every contender sends). */
export const paramsOf = (doc: Doc) => Anthropic.toParams(Extraction.request(MODEL, doc, "bench"))

/** The simulator's own count of what a document costs: input tokens, and the output it will write. */
export const costOf = (doc: Doc): { readonly inputTokens: number; readonly outputTokens: number } => {
  const body = paramsOf(doc) as unknown as Answers.MessagesBody
  return { inputTokens: Tokens.countTokens(body), outputTokens: Answers.answerFor(body).outputTokens }
}

/**
 * The least time (in provider minutes) the quota allows for the work: each
 * bucket starts full and refills at its limit a minute, so a dimension needing
 * `total` takes `(total - limit) / limit` minutes; the slowest dimension binds.
 * `available` is the share of the quota left to this work (foreign load).
 */
export const idealMinutes = (docs: ReadonlyArray<Doc>, limits: Limits, available = 1): number => {
  let input = 0
  let output = 0
  for (const doc of docs) {
    const cost = costOf(doc)
    input += cost.inputTokens
    output += cost.outputTokens
  }
  const minutes = (total: number, limit: number) => Math.max(0, total - limit) / (limit * available)
  return Math.max(
    minutes(docs.length, limits.requestsPerMinute),
    minutes(input, limits.inputTokensPerMinute),
    minutes(output, limits.outputTokensPerMinute)
  )
}

/** What a contender is given. Times are real milliseconds; the provider's minute lasts `60_000 / timeScale`. */
export interface RunContext {
  readonly baseURL: string
  readonly apiKey: string
  readonly docs: ReadonlyArray<Doc>
  /** The quota this process assumes (a share of the key's when split statically). */
  readonly limits: Limits
  readonly timeScale: number
  /** Stop sending new work after this many milliseconds. */
  readonly deadlineMs: number
  /** Interactive calls arriving at random, with this mean gap in real seconds (scenario 3). */
  readonly interactive?: { readonly meanGapSeconds: number; readonly seed: number } | undefined
  /** A shared store (scenario 4). */
  readonly redis?: { readonly url: string; readonly prefix: string } | undefined
}

/** What a contender reports of its own run (429s and utilisation come from the simulator). */
export interface RunResult {
  readonly completed: number
  readonly failed: number
  readonly makespanMs: number
  readonly timedOut: boolean
  readonly interactiveLatenciesMs?: ReadonlyArray<number> | undefined
}

/** The p-th percentile (0–100) of numbers, nearest rank. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** Interactive arrivals: exponential gaps (seconds) from a seeded generator. */
export const arrivals = (meanGapSeconds: number, seed: number) => {
  let state = seed >>> 0 || 1
  return () => {
    state = (state * 1_664_525 + 1_013_904_223) >>> 0
    return -Math.log(1 - state / 2 ** 32) * meanGapSeconds
  }
}

/** An interactive request: short prompt, short answer. */
export const interactiveParams = (n: number) => ({
  model: MODEL,
  max_tokens: 120,
  messages: [{ role: "user" as const, content: `Question ${n}: in one sentence, what does a token bucket limit?` }]
})

/** A rough input-token estimate (what a user without a tokenizer writes): a token per four characters. */
export const roughTokens = (doc: Doc): number => Math.ceil((doc.text.length + 600) / 4)
