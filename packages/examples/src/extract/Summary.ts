/**
 * What the extraction job measured: the end-of-run summary (`--json` prints
 * it), the samples taken during the run (the report charts them), and the
 * limits the run was held to.
 */
import { clock } from "./Display.js"

/** The quota the job assumes, per minute. */
export interface Limits {
  readonly requestsPerMinute: number
  readonly inputTokensPerMinute: number
  readonly outputTokensPerMinute: number
}

/** The summary `--json` prints: counts are what the job observed, not the simulator. */
export interface Summary {
  readonly documents: number
  readonly succeeded: number
  readonly failed: number
  readonly shed: number
  readonly overBudget: number
  /** Documents skipped because an earlier run already extracted them. */
  readonly skipped: number
  readonly http429: number
  readonly http529: number
  readonly retries: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly costUsd: number
  readonly wallSeconds: number
  readonly requestsPerMinute: number
  readonly inputTokensPerMinute: number
  readonly outputTokensPerMinute: number
  /** True when the run was stopped (Ctrl-C) before every document had an outcome. */
  readonly interrupted: boolean
  /** The 95th percentile of the time calls waited in the limiter for their permit, in seconds (absent: no call waited). */
  readonly waitP95Seconds?: number | undefined
  /** When the quota was the bottleneck: which limit bound the run and how much sooner it would finish with more (see {@link bottleneck}). */
  readonly bottleneck?: string | undefined
}

/**
 * One sample of the run, taken every second or so. Counters are cumulative
 * since the run started: the report derives from them what the provider
 * counts, the trailing minute and the use against the allowance.
 */
export interface Sample {
  /** Seconds since the run started. */
  readonly atSeconds: number
  /** Provider minutes since the run started (`atSeconds / 60` times the simulator's speed). */
  readonly quotaMinutes: number
  /** Calls the provider answered, and the input and output tokens it counted, so far. */
  readonly requests: number
  readonly inputTokens: number
  readonly outputTokens: number
  /** Calls waiting in the limiter, by priority class. */
  readonly queue: { readonly interactive: number; readonly normal: number; readonly batch: number }
  readonly inFlight: number
  /** Documents with an outcome so far. */
  readonly done: number
  readonly http429: number
  readonly http529: number
  readonly retries: number
  readonly costUsd: number
}

/** The dimensions of a quota, as the job names them. */
export type Dimension = "requests" | "inputTokens" | "outputTokens"

/**
 * What a per-minute quota allowed over `quotaMinutes` provider minutes: the
 * full bucket at the start (one minute's `limit`) plus the refill since.
 *
 * @example
 * allowance(600_000, 2.5) // 2_100_000
 */
export const allowance = (limit: number, quotaMinutes: number): number => limit * (1 + quotaMinutes)

/** A dimension's limit a minute. */
export const limitOf = (limits: Limits, dimension: Dimension): number =>
  dimension === "requests"
    ? limits.requestsPerMinute
    : dimension === "inputTokens"
    ? limits.inputTokensPerMinute
    : limits.outputTokensPerMinute

const titles: Record<Dimension, string> = {
  requests: "Requests per minute",
  inputTokens: "Input tokens per minute",
  outputTokens: "Output tokens per minute"
}

/** What a run did and saw, as {@link bottleneck} reads it. */
export interface BottleneckInput {
  /** What the run took from each dimension: requests answered, input and output tokens. */
  readonly work: { readonly [D in Dimension]: number }
  readonly limits: Limits
  /** The run's wall time. */
  readonly wallSeconds: number
  /** How much faster than real time the provider's minute ran (1 for a real provider). */
  readonly timeScale: number
  /** The 95th percentile of limiter waits, in seconds. */
  readonly waitP95Seconds: number | undefined
  /** 429 answers, and every call sent to the provider. */
  readonly http429: number
  readonly attempts: number
  /** The higher limit to estimate for, as a multiple of the binding one. Default 2. */
  readonly factor?: number | undefined
}

/** Which limit bound a run, and the estimate at a higher limit. */
export interface Bottleneck {
  readonly dimension: Dimension
  readonly factor: number
  readonly wallSeconds: number
  readonly estimatedSeconds: number
  /** One plain sentence for a person. */
  readonly sentence: string
}

/** Waits above this at p95 mean the quota held the run back. */
export const waitThresholdSeconds = 2
/** 429s above this share of the calls mean the quota held the run back. */
export const http429Threshold = 0.005

/**
 * When the quota was the bottleneck of a run — its limiter waits were above
 * two seconds at p95, or more than half a percent of its calls drew a 429 —
 * which limit bound it and about how long the run would have taken with that
 * limit `factor` times higher. `undefined` when neither sign is there, or when
 * the run's work fits in the quota's first minute (the quota cannot have bound
 * it).
 *
 * The estimate uses the run's own numbers, in provider minutes:
 *
 * - the least time the quota allows for the work of dimension `d` is
 *   `T_d = max(0, work_d − limit_d) / limit_d`: a bucket starts full with one
 *   minute's limit and then refills at `limit_d` a minute;
 * - the binding dimension is the one with the largest `T_d`;
 * - the rest of the wall time, `S = max(0, W − T_bind)`, is what the quota does
 *   not explain (the latency of the last calls, the start) and is kept as it is;
 * - at `factor ×` the binding limit, its least time is
 *   `T'_bind = max(0, work − factor·limit) / (factor·limit)`, the other
 *   dimensions keep theirs (one of them may bind next), and the run would take
 *   about `max(T'_bind, T_other…) + S`.
 *
 * @example
 * ```ts
 * bottleneck({
 *   work: { requests: 600, inputTokens: 300_000, outputTokens: 20_000 },
 *   limits: { requestsPerMinute: 1_000, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 },
 *   wallSeconds: 560, timeScale: 1, waitP95Seconds: 40, http429: 0, attempts: 600
 * })?.sentence
 * // "Input tokens per minute bound this run (waits of 40.0 s at p95): at 2× that limit (60,000 a minute) it would have finished in about 4m20s instead of 9m20s."
 * ```
 */
export const bottleneck = (input: BottleneckInput): Bottleneck | undefined => {
  const factor = input.factor ?? 2
  const waited = input.waitP95Seconds !== undefined && input.waitP95Seconds > waitThresholdSeconds
  const share429 = input.attempts > 0 ? input.http429 / input.attempts : 0
  const refused = share429 > http429Threshold
  if (!waited && !refused) return undefined
  const dimensions: ReadonlyArray<Dimension> = ["requests", "inputTokens", "outputTokens"]
  const leastMinutes = (dimension: Dimension, multiple = 1) => {
    const limit = limitOf(input.limits, dimension) * multiple
    return limit > 0 ? Math.max(0, input.work[dimension] - limit) / limit : 0
  }
  const binding = dimensions.reduce((
    best,
    dimension
  ) => (leastMinutes(dimension) > leastMinutes(best) ? dimension : best))
  const bound = leastMinutes(binding)
  if (!(bound > 0)) return undefined
  const minutesPerSecond = input.timeScale / 60
  const wallMinutes = input.wallSeconds * minutesPerSecond
  const rest = Math.max(0, wallMinutes - bound)
  const after = Math.max(
    leastMinutes(binding, factor),
    ...dimensions.filter((d) => d !== binding).map((d) => leastMinutes(d))
  )
  const estimatedSeconds = (after + rest) / minutesPerSecond
  const signs = [
    ...(waited ? [`waits of ${input.waitP95Seconds!.toFixed(1)} s at p95`] : []),
    ...(refused ? [`${(100 * share429).toFixed(1)} % of calls answered 429`] : [])
  ].join(", ")
  const higher = Math.round(limitOf(input.limits, binding) * factor).toLocaleString("en-US")
  return {
    dimension: binding,
    factor,
    wallSeconds: input.wallSeconds,
    estimatedSeconds,
    sentence:
      `${
        titles[binding]
      } bound this run (${signs}): at ${factor}× that limit (${higher} a minute) it would have finished in about ` +
      `${clock(estimatedSeconds)} instead of ${clock(input.wallSeconds)}.`
  }
}
