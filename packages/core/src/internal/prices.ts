/**
 * The built-in list prices, USD per million tokens, by model family, with the
 * snapshot names and aliases the providers publish for each family.
 *
 * Sources, read on 2026-12-02 from stored copies of the pages (not fetched
 * live; the providers change them: check before you rely on a number):
 * - Anthropic: https://docs.anthropic.com/en/docs/about-claude/pricing (model
 *   table: base input, 5-minute cache writes, 1-hour cache writes, cache hits,
 *   output; the copy read lists Opus 4.1 and 4, Sonnet 4.5, 4 and 3.7, Haiku
 *   4.5, 3.5 and 3) and, for Opus 4.5, its model page
 *   https://platform.claude.com/docs/en/models/opus-4-5/overview ($5 / $25,
 *   5-minute write $6.25, 1-hour write $10, cache read $0.50).
 *   Cache writes are priced here at the 5-minute rate (1.25× input); 1-hour
 *   writes cost 2× input, reads 0.1× input (Haiku 3: $0.30 and $0.03 as published).
 *   Sonnet 4.5 and 4 charge more past 200K input tokens ($6/$22.50): not modelled.
 * - OpenAI: https://developers.openai.com/api/docs/pricing and the model pages
 *   (https://developers.openai.com/api/docs/models/<model>, e.g. gpt-5-nano:
 *   $0.05 input, $0.005 cached input, $0.40 output). OpenAI does not charge for
 *   cache writes: they are priced as plain input.
 * - Cross-check: every name below that LiteLLM's model_prices_and_context_window.json
 *   also prices (34 of them, in a copy of July 2026) has exactly these prices there,
 *   cache prices included.
 *
 * A snapshot is listed under its family only when the provider publishes it as
 * the same model at the same price; `gpt-4o-2024-05-13` is priced differently
 * from `gpt-4o` and is a family of its own.
 *
 * @internal
 */

/** Prices of one family, USD per million tokens. */
export interface FamilyPrice {
  readonly inputPerMTok: number
  readonly outputPerMTok: number
  readonly cacheReadPerMTok: number
  readonly cacheWritePerMTok: number
}

/** A model family: its prices and the other names it is called by (dated snapshots, aliases). */
export interface Family {
  readonly provider: "anthropic" | "openai"
  readonly price: FamilyPrice
  readonly names: ReadonlyArray<string>
}

/** The date the built-in prices were last checked against the sources above. */
export const checkedOn = "2026-12-02"

const anthropic = (
  inputPerMTok: number,
  outputPerMTok: number,
  cacheReadPerMTok: number,
  cacheWritePerMTok: number,
  names: ReadonlyArray<string>
): Family => ({
  provider: "anthropic",
  price: { inputPerMTok, outputPerMTok, cacheReadPerMTok, cacheWritePerMTok },
  names
})

/** OpenAI: cache writes at the input price (no write surcharge), reads at the published cached-input price. */
const openai = (
  inputPerMTok: number,
  outputPerMTok: number,
  cachedInputPerMTok: number,
  names: ReadonlyArray<string>
): Family => ({
  provider: "openai",
  price: { inputPerMTok, outputPerMTok, cacheReadPerMTok: cachedInputPerMTok, cacheWritePerMTok: inputPerMTok },
  names
})

/** Family name to its prices and other names. */
export const families: Readonly<Record<string, Family>> = {
  // Anthropic: input, output, cache read, 5-minute cache write.
  "claude-opus-4-5": anthropic(5, 25, 0.5, 6.25, ["claude-opus-4-5-20251101"]),
  "claude-opus-4-1": anthropic(15, 75, 1.5, 18.75, ["claude-opus-4-1-20250805"]),
  "claude-opus-4": anthropic(15, 75, 1.5, 18.75, ["claude-opus-4-20250514", "claude-opus-4-0"]),
  "claude-sonnet-4-5": anthropic(3, 15, 0.3, 3.75, ["claude-sonnet-4-5-20250929"]),
  "claude-sonnet-4": anthropic(3, 15, 0.3, 3.75, ["claude-sonnet-4-20250514", "claude-sonnet-4-0"]),
  "claude-3-7-sonnet": anthropic(3, 15, 0.3, 3.75, ["claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"]),
  "claude-haiku-4-5": anthropic(1, 5, 0.1, 1.25, ["claude-haiku-4-5-20251001"]),
  "claude-3-5-haiku": anthropic(0.8, 4, 0.08, 1, ["claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"]),
  "claude-3-haiku": anthropic(0.25, 1.25, 0.03, 0.3, ["claude-3-haiku-20240307"]),
  // OpenAI: input, output, cached input.
  "gpt-5": openai(1.25, 10, 0.125, ["gpt-5-2025-08-07"]),
  "gpt-5-mini": openai(0.25, 2, 0.025, ["gpt-5-mini-2025-08-07"]),
  "gpt-5-nano": openai(0.05, 0.4, 0.005, ["gpt-5-nano-2025-08-07"]),
  "gpt-4.1": openai(2, 8, 0.5, ["gpt-4.1-2025-04-14"]),
  "gpt-4.1-mini": openai(0.4, 1.6, 0.1, ["gpt-4.1-mini-2025-04-14"]),
  "gpt-4.1-nano": openai(0.1, 0.4, 0.025, ["gpt-4.1-nano-2025-04-14"]),
  "gpt-4o": openai(2.5, 10, 1.25, ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20"]),
  // The first gpt-4o snapshot kept its launch price and has no cached-input discount.
  "gpt-4o-2024-05-13": openai(5, 15, 5, []),
  "gpt-4o-mini": openai(0.15, 0.6, 0.075, ["gpt-4o-mini-2024-07-18"]),
  "o3": openai(2, 8, 0.5, ["o3-2025-04-16"]),
  "o4-mini": openai(1.1, 4.4, 0.275, ["o4-mini-2025-04-16"])
}
