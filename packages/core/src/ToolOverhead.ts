/**
 * The tokens a provider adds on its own to a request that offers tools, as
 * data: a hidden system prompt that teaches the model to call them. The
 * provider counts (and bills, and rate-limits) them as input, but they are
 * nowhere in the request, so no tokenizer over the request can see them; the
 * `TokenEstimator` adds them to the estimate of a request with tools and takes
 * them out before it calibrates.
 *
 * The table is keyed by `provider/model-prefix` and holds two counts: `auto`
 * (tool choice `auto` or `none`, and no tool choice) and `any` (tool choice
 * `any` or a named `tool`). A model finds its entry by the longest prefix that
 * ends where the model name has a `-` (`claude-sonnet-4` covers
 * `claude-sonnet-4-5-20250929`), as prices do.
 *
 * Sources, as of November 2026 (check them before you rely on them):
 *
 * - Anthropic publishes the counts with its tool-use pricing
 *   (docs.anthropic.com/en/docs/tool-use-pricing-and-tokens, now "Tool use
 *   with Claude → Pricing"): Claude 4.x (Opus 4.1, Opus 4, Sonnet 4.5,
 *   Sonnet 4, Haiku 4.5), Sonnet 3.7 and Sonnet 3.5 (Oct): 346 with
 *   `auto`/`none`, 313 with `any`/`tool`; Sonnet 3.5 (June, `-20240620`):
 *   294 / 261; Haiku 3.5 and Haiku 3: 264 / 340; Opus 3: 530 / 281; Sonnet 3:
 *   159 / 235. The page's older editions list the Claude 3 rows only (with
 *   `auto` alone for `none`); the 4.x rows are the current edition's.
 * - OpenAI documents no such number. Its cookbook's tool-token recipe
 *   ("How to count tokens with tiktoken", `num_tokens_for_tools`) adds 12
 *   tokens once per request with functions, on top of what each function's
 *   definition costs (which the estimator counts from the tool itself); this
 *   table takes those 12 for both columns. Per-function framing beyond the
 *   estimator's own 4 per tool is left to calibration, which learns
 *   requests with tools apart from plain ones.
 *
 * A model missing from the table gets no overhead; the estimator's per-shape
 * calibration then absorbs it (for a steady tool set) without skewing the
 * model's plain requests.
 *
 * @example
 * ```ts
 * import { TokenEstimator, ToolOverhead } from "@sluice/core"
 *
 * ToolOverhead.tokensFor(ToolOverhead.defaultTable, "claude-sonnet-4-5", { type: "tool", name: "record" }) // 313
 * // Your own numbers, over the defaults:
 * TokenEstimator.layer({ toolOverhead: { ...ToolOverhead.defaultTable, "my-gateway/llama-3": { auto: 40, any: 40 } } })
 * ```
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as LlmClient from "./LlmClient.js"

const Tokens = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

/**
 * One model's overhead, in the provider's tokens, by tool choice.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Entry = Schema.Struct({
  /** With tool choice `auto` or `none`, or none given. */
  auto: Tokens,
  /** With tool choice `any` or a named `tool`. */
  any: Tokens
})
/**
 * @since 0.1.0
 * @category models
 */
export type Entry = typeof Entry.Type

/**
 * `provider/model-prefix` (or a bare `model-prefix`, for any provider) to its overhead.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Table = Schema.Record({ key: Schema.String, value: Entry })
/**
 * @since 0.1.0
 * @category models
 */
export type Table = typeof Table.Type

/**
 * The published counts (see the module doc for the sources and their date).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultTable: Table = {
  "anthropic/claude-opus-4": { auto: 346, any: 313 },
  "anthropic/claude-sonnet-4": { auto: 346, any: 313 },
  "anthropic/claude-haiku-4": { auto: 346, any: 313 },
  "anthropic/claude-3-7-sonnet": { auto: 346, any: 313 },
  "anthropic/claude-3-5-sonnet": { auto: 346, any: 313 },
  "anthropic/claude-3-5-sonnet-20240620": { auto: 294, any: 261 },
  "anthropic/claude-3-5-haiku": { auto: 264, any: 340 },
  "anthropic/claude-3-haiku": { auto: 264, any: 340 },
  "anthropic/claude-3-opus": { auto: 530, any: 281 },
  "anthropic/claude-3-sonnet": { auto: 159, any: 235 },
  "openai/gpt-4o": { auto: 12, any: 12 },
  "openai/gpt-4.1": { auto: 12, any: 12 },
  "openai/gpt-4": { auto: 12, any: 12 },
  "openai/gpt-5": { auto: 12, any: 12 },
  "openai/o1": { auto: 12, any: 12 },
  "openai/o3": { auto: 12, any: 12 },
  "openai/o4": { auto: 12, any: 12 }
}

/**
 * A table that could not be accepted; each issue names its field (`anthropic/claude-x.any`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidToolOverheadTable extends Data.TaggedError("InvalidToolOverheadTable")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid tool-overhead table: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

/**
 * Validates a table (from a file, from `Config`); the error names every wrong field.
 *
 * @example
 * ```ts
 * import { ToolOverhead } from "@sluice/core"
 *
 * ToolOverhead.decodeTable({ "openai/gpt-4o": { auto: 12, any: -1 } })
 * // Left: "openai/gpt-4o.any: Expected a non-negative number, …"
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const decodeTable = (input: unknown): Either.Either<Table, InvalidToolOverheadTable> =>
  Either.mapLeft(
    Schema.decodeUnknownEither(Table, { errors: "all", onExcessProperty: "error" })(input),
    (error) =>
      new InvalidToolOverheadTable({
        issues: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
          path: issue.path.map(String).join("."),
          message: issue.message
        }))
      })
  )

/** `provider/model` split at the first `/`; a key without one is for any provider. */
const splitKey = (key: string): { readonly provider: string | undefined; readonly model: string } => {
  const slash = key.indexOf("/")
  return slash < 0
    ? { provider: undefined, model: key }
    : { provider: key.slice(0, slash), model: key.slice(slash + 1) }
}

/**
 * The entry of `model`: the key whose model part is the model itself or the
 * longest prefix of it ending at a `-`. With `provider`, only keys of that
 * provider (or of none) count; without, any provider's. `undefined` when no
 * key matches.
 *
 * @example
 * ```ts
 * import { ToolOverhead } from "@sluice/core"
 *
 * ToolOverhead.lookup(ToolOverhead.defaultTable, "claude-3-5-haiku-20241022") // { auto: 264, any: 340 }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const lookup = (table: Table, model: string, provider?: string | undefined): Entry | undefined => {
  let best: { readonly length: number; readonly entry: Entry } | undefined
  for (const [key, entry] of Object.entries(table)) {
    const parts = splitKey(key)
    if (provider !== undefined && parts.provider !== undefined && parts.provider !== provider) continue
    const matches = model === parts.model || model.startsWith(`${parts.model}-`)
    if (matches && (best === undefined || parts.model.length > best.length)) {
      best = { length: parts.model.length, entry }
    }
  }
  return best?.entry
}

/**
 * The column of a tool choice: `any` for `any` and a named `tool`, `auto` otherwise.
 *
 * @since 0.1.0
 * @category utilities
 */
export const columnOf = (choice: LlmClient.ToolChoice | undefined): keyof Entry =>
  choice?.type === "any" || choice?.type === "tool" ? "any" : "auto"

/**
 * The overhead a request to `model` with tools pays, in the provider's tokens:
 * 0 when the table has no entry for it.
 *
 * @example
 * ```ts
 * import { ToolOverhead } from "@sluice/core"
 *
 * ToolOverhead.tokensFor(ToolOverhead.defaultTable, "claude-sonnet-4-5", undefined) // 346 (auto)
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const tokensFor = (
  table: Table,
  model: string,
  choice: LlmClient.ToolChoice | undefined,
  provider?: string | undefined
): number => {
  const entry = lookup(table, model, provider)
  const tokens = entry === undefined ? 0 : entry[columnOf(choice)]
  return Number.isFinite(tokens) && tokens > 0 ? tokens : 0
}

/**
 * The overhead of a request: {@link tokensFor} its model and tool choice when
 * it offers at least one tool, else 0.
 *
 * @example
 * ```ts
 * import { type LlmClient, ToolOverhead } from "@sluice/core"
 *
 * const request: LlmClient.Request = {
 *   model: "claude-sonnet-4-5",
 *   messages: [{ role: "user", content: "Extract the invoice fields." }],
 *   maxOutputTokens: 1_024,
 *   tools: [{ name: "record", description: "Records the fields", inputSchema: { type: "object" } }],
 *   toolChoice: { type: "tool", name: "record" }
 * }
 * ToolOverhead.ofRequest(ToolOverhead.defaultTable, request) // 313: a forced tool on Sonnet 4.5
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const ofRequest = (table: Table, request: LlmClient.Request, provider?: string | undefined): number =>
  request.tools === undefined || request.tools.length === 0
    ? 0
    : tokensFor(table, request.model, request.toolChoice, provider)
