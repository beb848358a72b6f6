/**
 * What the extraction job measured: the end-of-run summary (`--json` prints
 * it), the samples taken during the run (the report charts them), and the
 * limits the run was held to.
 */

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
}

/** One sample of the run, taken every second or so. Counters are cumulative; rates are over the last few seconds. */
export interface Sample {
  /** Seconds since the run started. */
  readonly atSeconds: number
  readonly requestsPerMinute: number
  readonly inputTokensPerMinute: number
  readonly outputTokensPerMinute: number
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
