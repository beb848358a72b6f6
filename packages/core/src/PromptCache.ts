/**
 * What a call is expected to read from the provider's prompt cache, so that
 * a limiter reserves only the input that will count. The Governor and
 * `EffectAi.layerGoverned` use it (`predictCacheReads`).
 *
 * A request's cached prefix is everything up to its last block marked
 * `cache_control` (the tools and the system prompt for `systemCacheControl`).
 * After an answer whose usage read or wrote the cache, that prefix is cached
 * at the provider, `cacheRead + cacheWrite` tokens long, until its TTL runs
 * out (each answer renews it here). A later call on the same key whose
 * candidate prefixes (the provider's: each breakpoint's, and the blocks up to
 * 20 before it) include a cached one is expected to read that many tokens;
 * when the rule says reads do not count (Anthropic's current models), they
 * need not be reserved. A miss is not a failure: the settlement charges what
 * the provider counted, as for any under-estimate, and the prediction is
 * dropped.
 *
 * Calls made before the first answer reserve their whole prompt: nothing is
 * known to be cached yet.
 *
 * @since 0.1.0
 */
import * as LlmClient from "./LlmClient.js"

/** 53-bit string hash (cyrb53): fast, and collisions between two prefixes of one key are negligible. */
const hash = (text: string): string => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)
}

/** Texts shorter than this enter a block's id as they are; longer ones as their hash, remembered. */
const digestFrom = 1_024
/** Characters of remembered texts, at most; the oldest go first. */
const digestChars = 4_000_000
const digests = new Map<string, string>()
let digested = 0

/**
 * A text as it enters a block's id: itself when short, else its length and
 * hash, computed once per text while it is among the last 4,000,000
 * characters digested. A 40,000-token document took 10–20 ms to hash on every
 * call (and every retry and fallback rung); now the first call pays it and the
 * next ones a map lookup (a long string's hash in V8 is its length, and the
 * same string compares at once).
 */
const digest = (text: string): string => {
  if (text.length < digestFrom) return `=${text}`
  const known = digests.get(text)
  if (known !== undefined) return known
  const id = `#${text.length}:${hash(text)}`
  digests.set(text, id)
  digested += text.length
  while (digested > digestChars) {
    const oldest = digests.keys().next().value!
    digested -= oldest.length
    digests.delete(oldest)
  }
  return id
}

const isMarked = (block: LlmClient.ContentBlock): boolean => block.type === "text" && block.cacheControl !== undefined

/** A block's content for the chain: `cacheControl` left out, so moving a breakpoint does not change what came before it. */
const withoutCacheControl = (key: string, value: unknown) => (key === "cacheControl" ? undefined : value)

/**
 * How many blocks before a breakpoint the provider also looks for a cached prefix (Anthropic's lookback).
 *
 * @since 0.1.0
 * @category utilities
 */
export const lookback = 20

/**
 * The prefixes of a request the cache may hold, as ids.
 *
 * @since 0.1.0
 * @category models
 */
export interface Prefixes {
  /** The prefix up to the last breakpoint: what the answer's cache usage measures. */
  readonly last: string
  /** Every prefix the provider may read, longest first: the last breakpoint's, then the blocks up to 20 before each breakpoint. */
  readonly candidates: ReadonlyArray<string>
}

/**
 * The prefixes of a request on `key` that the provider's cache may hold, or
 * `undefined` when it marks nothing to cache. Blocks go in the provider's
 * order (tools, the system prompt, then each message's blocks), and the id of
 * a prefix is a hash chained over its blocks (a long text by its remembered
 * hash), `cacheControl` aside: a
 * conversation whose next turn moves its breakpoint forward still finds the
 * prefix the last turn cached, as the provider does.
 *
 * @since 0.1.0
 * @category utilities
 */
export const prefixes = (request: LlmClient.Request, key: string): Prefixes | undefined => {
  // Most requests mark nothing: they are not serialised at all.
  if (!LlmClient.marksCache(request)) return undefined
  const blocks: Array<string> = []
  const marked: Array<number> = []
  for (const tool of request.tools ?? []) blocks.push(`tool|${JSON.stringify(tool)}`)
  if (request.system !== undefined) {
    if (request.systemCacheControl !== undefined) marked.push(blocks.length)
    blocks.push(`system|${digest(request.system)}`)
  }
  for (const message of request.messages) {
    if (typeof message.content === "string") {
      blocks.push(`${message.role}:start|${digest(message.content)}`)
      continue
    }
    message.content.forEach((block, b) => {
      if (isMarked(block)) marked.push(blocks.length)
      const content = block.type === "text" ? `text|${digest(block.text)}` : JSON.stringify(block, withoutCacheControl)
      blocks.push(`${message.role}${b === 0 ? ":start" : ""}|${content}`)
    })
  }
  if (marked.length === 0) return undefined
  const last = marked[marked.length - 1]!
  const wanted = new Set<number>()
  for (const position of marked) for (let p = Math.max(0, position - lookback); p <= position; p++) wanted.add(p)
  const ids: Array<string> = []
  let chain = `${key}\u0000${request.model}`
  for (let position = 0; position <= last; position++) {
    chain = hash(`${chain}\u0000${blocks[position]!}`)
    if (wanted.has(position)) ids.push(`${key}\u0000${position}\u0000${chain}`)
  }
  return { last: ids[ids.length - 1]!, candidates: ids.reverse() }
}

/**
 * A prefix expected to be cached: its id and its length in the provider's tokens.
 *
 * @since 0.1.0
 * @category models
 */
export interface Hit {
  readonly id: string
  readonly tokens: number
}

/**
 * Cached prefixes the Governor has seen answered, with their length and when they expire.
 *
 * @since 0.1.0
 * @category models
 */
export interface Predictor {
  /** The longest of a call's candidate prefixes still expected to be cached at `now`, if any. */
  readonly expected: (candidates: ReadonlyArray<string>, now: number) => Hit | undefined
  /**
   * Folds in what an answered call read and wrote: its last prefix is cached
   * with `cacheRead + cacheWrite` tokens; when it read nothing, the prefix it
   * was expected to read (`hit`) is not cached any more.
   */
  readonly learn: (last: string, hit: Hit | undefined, usage: LlmClient.Usage, now: number) => void
}

/**
 * A predictor holding at most `maxEntries` prefixes (the least recently answered go first).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makePredictor = (options: { readonly ttlMillis: number; readonly maxEntries: number }): Predictor => {
  const entries = new Map<string, { readonly tokens: number; readonly expiresAt: number }>()
  return {
    expected: (candidates, now) => {
      for (const id of candidates) {
        const entry = entries.get(id)
        if (entry === undefined) continue
        if (entry.expiresAt > now) return { id, tokens: entry.tokens }
        entries.delete(id)
      }
      return undefined
    },
    learn: (last, hit, usage, now) => {
      if (hit !== undefined && !(usage.cacheReadInputTokens > 0)) entries.delete(hit.id)
      const tokens = usage.cacheReadInputTokens + usage.cacheWriteInputTokens
      // Re-inserted so that the Map's order is the order of the last answer.
      entries.delete(last)
      if (!(tokens > 0)) return
      entries.set(last, { tokens, expiresAt: now + options.ttlMillis })
      if (entries.size > options.maxEntries) entries.delete(entries.keys().next().value!)
    }
  }
}

/**
 * What to reserve for a call's input, and what to learn from its answer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Plan {
  /** The input to reserve: the estimate, less the cache reads expected (at least 1 when any are). */
  readonly inputTokens: number
  /**
   * Folds in the answer's usage at `now`, and says how the expectation fared:
   * `read` (cache reads were expected and came), `missed` (expected, none
   * came), or `undefined` when nothing was expected.
   */
  readonly learn: (usage: LlmClient.Usage, now: number) => "read" | "missed" | undefined
}

/**
 * The input to reserve for `request` on `key` whose whole prompt is estimated
 * at `inputTokens`, for a provider whose reads do not count against the
 * input-token limits: less the tokens its longest cached candidate prefix
 * holds, when one is expected to be cached.
 *
 * @example
 * ```ts
 * import { type LlmClient, PromptCache } from "@sluice/core"
 *
 * const predictor = PromptCache.makePredictor({ ttlMillis: 5 * 60_000, maxEntries: 10_000 })
 * const request: LlmClient.Request = {
 *   model: "claude-sonnet-4-5",
 *   system: "You extract invoice fields.",
 *   systemCacheControl: { type: "ephemeral" },
 *   messages: [{ role: "user", content: "Invoice #1" }],
 *   maxOutputTokens: 1_024
 * }
 * const plan = PromptCache.plan(predictor, request, "anthropic/claude-sonnet-4-5", 12_000, Date.now())
 * plan.inputTokens // 12000: nothing is cached yet
 * // reserve plan.inputTokens; after the answer: plan.learn(response.usage, Date.now())
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const plan = (
  predictor: Predictor,
  request: LlmClient.Request,
  key: string,
  inputTokens: number,
  now: number
): Plan => {
  const cached = prefixes(request, key)
  if (cached === undefined) return { inputTokens, learn: () => undefined }
  const hit = predictor.expected(cached.candidates, now)
  return {
    inputTokens: hit === undefined ? inputTokens : Math.max(1, inputTokens - hit.tokens),
    learn: (usage, at) => {
      predictor.learn(cached.last, hit, usage, at)
      return hit === undefined ? undefined : usage.cacheReadInputTokens > 0 ? "read" : "missed"
    }
  }
}
