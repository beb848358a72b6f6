/**
 * `@sluice/providers`: provider layers for `LlmClient`, rate-limit header
 * parsers, and the provider simulator (HTTP and in-process).
 */

/** `LlmClient` over the official Anthropic SDK. */
export * as Anthropic from "./Anthropic.js"
/** `LlmClient` over OpenAI-compatible chat completions (OpenAI, Azure, local servers). */
export * as OpenAiCompatible from "./OpenAiCompatible.js"
/** Rate-limit headers of every provider, to one `RateLimitSnapshot`. */
export * as RateLimitHeaders from "./RateLimitHeaders.js"
/** An in-process simulated provider as `LlmClient`, for tests under `TestClock`. */
export * as SimulatedClient from "./SimulatedClient.js"
/** The HTTP provider simulator. */
export * as Simulator from "./Simulator.js"
/** A Promise facade with the Anthropic SDK's `messages` surface, governed (`createClient`). */
export * as Sluice from "./Promise.js"
// `EffectAi` (a governed `@effect/ai` `LanguageModel`) is reached by its own
// subpath, `@sluice/providers/EffectAi`, so that only its users load `@effect/ai`.
