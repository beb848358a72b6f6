/**
 * `@sluice/providers`: provider layers for `LlmClient` and rate-limit header
 * parsers. The provider simulator is its own package, `@sluice/simulator`, so
 * that loading this one loads no HTTP server (`node:http`), `@effect/cli` or
 * `@effect/platform-node`.
 *
 * @since 0.1.0
 */

/**
 * `LlmClient` over the official Anthropic SDK.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Anthropic from "./Anthropic.js"
/**
 * `LlmClient` over OpenAI-compatible chat completions (OpenAI, Azure, local servers).
 *
 * @since 0.1.0
 * @category utilities
 */
export * as OpenAiCompatible from "./OpenAiCompatible.js"
/**
 * Rate-limit headers of every provider, to one `RateLimitSnapshot`.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as RateLimitHeaders from "./RateLimitHeaders.js"
/**
 * A Promise facade with the Anthropic SDK's `messages` surface, governed (`createClient`).
 *
 * @since 0.1.0
 * @category utilities
 */
export * as Sluice from "./Promise.js"
/**
 * The whole governed stack from one declarative file (`sluice.yaml` or JSON), `SLUICE_*` variables over it.
 *
 * @since 0.1.0
 * @category utilities
 */
export * as SluiceConfig from "./SluiceConfig.js"
// `EffectAi` (a governed `@effect/ai` `LanguageModel`) is reached by its own
// subpath, `@sluice/providers/EffectAi`, so that only its users load `@effect/ai`;
// `PromiseOpenAi` by `@sluice/providers/PromiseOpenAi`, so that only its users need
// the optional `openai` peer (its types).
