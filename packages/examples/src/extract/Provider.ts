/**
 * Where the extraction job's calls go, and the most a run on a real provider
 * may spend.
 *
 * Safe by default. The job calls the built-in simulator unless a flag asks for
 * something else: `--provider anthropic` (the Anthropic API, with the key from
 * `ANTHROPIC_API_KEY`) or `--base-url URL` (an Anthropic-compatible endpoint).
 * A key in the environment alone never sends a document anywhere; it only makes
 * the job say, in one line, which flag would. The endpoint is never read from
 * the environment either (`ANTHROPIC_BASE_URL` is ignored): the job always
 * hands the SDK its base URL, so the SDK's own fallback to that variable cannot
 * apply.
 *
 * Bounded by default. A run on anything but the simulator always has a budget:
 * `--budget-usd`, or {@link defaultBudgetUsd}. A default cap rather than a
 * refusal: `--provider anthropic` on its own then does something useful and
 * safe (it stops at a few dollars, records the rest as over budget, and a rerun
 * with a larger `--budget-usd` resumes), while the line printed before the
 * first call says what the whole job could cost at worst and how to raise the
 * cap. The budget is core's `Budget`, which reserves each call's worst case
 * before sending it, so the cap holds even with every call in flight.
 *
 * The worst case is every document still to send at its estimated input (the
 * same `TokenEstimator` estimate the Governor reserves, margin included) plus
 * `max_tokens` of output, at the model's list price (`Pricing.worstCaseMicros`).
 */
import type { LlmClient } from "@sluice/core"
import { Pricing, TokenEstimator } from "@sluice/core"
import { Data, Effect, Either, Option, Stream } from "effect"
import type { Document } from "./Documents.js"

/** Flags that parse but do not go together, or ask for what the environment lacks. */
export class InvalidFlags extends Data.TaggedError("InvalidFlags")<{ readonly message: string }> {}

/** The values of `--provider`. */
export const providerNames = ["simulator", "anthropic"] as const
export type ProviderName = typeof providerNames[number]

/** The Anthropic API's endpoint, given to the SDK explicitly. */
export const anthropicApi = "https://api.anthropic.com"

/** The most a run on a real provider spends, over all its runs on one database, when `--budget-usd` is not given. */
export const defaultBudgetUsd = 5

/** Where the calls go. */
export type Choice =
  | {
    readonly _tag: "Simulator"
    /** One line for the user when a key is set but unused. */
    readonly notice: string | undefined
  }
  | {
    readonly _tag: "Anthropic"
    /** `anthropicApi`, or the endpoint `--base-url` named (which may do without a key). */
    readonly baseUrl: string
  }

/** What {@link choose} reads: the flags, and only whether the environment holds a key. */
export interface Request {
  readonly provider: Option.Option<ProviderName>
  readonly baseUrl: Option.Option<string>
  readonly anthropicKeySet: boolean
}

/**
 * The provider for a run, from the flags alone: the simulator unless
 * `--provider anthropic` or `--base-url` asks for Anthropic (or an endpoint
 * speaking its API). A key in the environment only adds a notice.
 *
 * @example
 * ```ts
 * choose({ provider: Option.none(), baseUrl: Option.none(), anthropicKeySet: true })
 * // Right({ _tag: "Simulator", notice: "ANTHROPIC_API_KEY is set but not used: …" })
 * ```
 */
export const choose = (request: Request): Either.Either<Choice, InvalidFlags> => {
  const provider = Option.getOrUndefined(request.provider)
  if (provider === "simulator" && Option.isSome(request.baseUrl)) {
    return Either.left(
      new InvalidFlags({
        message:
          "--provider simulator is the built-in simulator and --base-url an endpoint of your own: give one of them"
      })
    )
  }
  if (provider === "anthropic" || Option.isSome(request.baseUrl)) {
    if (Option.isNone(request.baseUrl) && !request.anthropicKeySet) {
      return Either.left(new InvalidFlags({ message: "--provider anthropic needs the API key in ANTHROPIC_API_KEY" }))
    }
    return Either.right({ _tag: "Anthropic", baseUrl: Option.getOrElse(request.baseUrl, () => anthropicApi) })
  }
  return Either.right({
    _tag: "Simulator",
    notice: request.anthropicKeySet
      ? "ANTHROPIC_API_KEY is set but not used: this run calls the built-in simulator (--provider anthropic calls the real Anthropic API)"
      : undefined
  })
}

/** The budget of a run: none on the simulator unless asked for, else `--budget-usd` or the default cap. */
export interface BudgetChoice {
  readonly usd: number | undefined
  readonly isDefault: boolean
}

/** The budget for a choice and `--budget-usd`: a real provider always gets one. */
export const budgetOf = (choice: Choice, budgetUsd: Option.Option<number>): BudgetChoice =>
  Option.isSome(budgetUsd)
    ? { usd: budgetUsd.value, isDefault: false }
    : choice._tag === "Simulator"
    ? { usd: undefined, isDefault: false }
    : { usd: defaultBudgetUsd, isDefault: true }

/** What sending every document could cost at most. */
export interface WorstCase {
  readonly documents: number
  /** Estimated input of all of them, margin included. */
  readonly inputTokens: number
  /** `max_tokens` of each, summed. */
  readonly outputTokens: number
  readonly micros: number
}

/**
 * Every document's worst case, added up: its estimated input plus the
 * request's `maxOutputTokens`, at `price`. Documents that carry a `problem`
 * are never sent and count for nothing.
 */
export const worstCase = <E, R>(
  documents: Stream.Stream<Document, E, R>,
  options: {
    readonly request: (document: Document) => LlmClient.Request
    readonly estimator: TokenEstimator.TokenEstimator["Type"]
    readonly price: Pricing.ModelPrice
  }
): Effect.Effect<WorstCase, E, R> =>
  documents.pipe(
    Stream.filter((document) => document.problem === undefined),
    Stream.mapEffect((document) => {
      const request = options.request(document)
      return Effect.map(options.estimator.estimate(request), (estimate) => ({
        inputTokens: estimate.inputTokens,
        outputTokens: request.maxOutputTokens,
        micros: Pricing.worstCaseMicros(options.price, {
          inputTokens: estimate.inputTokens,
          maxOutputTokens: request.maxOutputTokens
        })
      }))
    }),
    Stream.runFold(
      { documents: 0, inputTokens: 0, outputTokens: 0, micros: 0 } satisfies WorstCase as WorstCase,
      (sum, call) => ({
        documents: sum.documents + 1,
        inputTokens: sum.inputTokens + call.inputTokens,
        outputTokens: sum.outputTokens + call.outputTokens,
        micros: sum.micros + call.micros
      })
    )
  )

const usd = (amount: number) => `$${amount.toFixed(2)}`
const count = (n: number) => n.toLocaleString("en-US")

/** The budget line printed before a run: the cap, and where it came from. */
export const budgetLine = (budget: BudgetChoice): string | undefined =>
  budget.usd === undefined
    ? undefined
    : budget.isDefault
    ? `budget ${usd(budget.usd)} for the job (the default on a real provider; --budget-usd sets another)`
    : `budget ${usd(budget.usd)} for the job (--budget-usd)`

/**
 * The worst-case line printed before the first call: what the documents could
 * cost if every one used its whole `max_tokens`, and the most the run spends.
 */
export const worstCaseLine = (model: string, worst: WorstCase, budgetUsd: number | undefined): string => {
  const total = Pricing.toUsd(worst.micros)
  const most = budgetUsd === undefined ? total : Math.min(total, budgetUsd)
  return `worst case ${usd(total)}: ${count(worst.documents)} documents to send, about ${
    count(worst.inputTokens)
  } input tokens ` +
    `and ${
      count(worst.outputTokens)
    } output tokens (max_tokens of each) at ${model}'s list price; this run spends at most ${usd(most)}` +
    (budgetUsd !== undefined && total > budgetUsd ? ` (the budget), documents past it are recorded as over budget` : "")
}
