/**
 * What the Governor expects a call to read from the provider's prompt cache,
 * so that it reserves only the input that will count.
 *
 * A request's cached prefix is everything up to its last block marked
 * `cache_control` (the tools and the system prompt for `systemCacheControl`).
 * After an answer whose usage read or wrote the cache, the prefix is cached at
 * the provider, `cacheRead + cacheWrite` tokens long, until its TTL runs out
 * (each read refreshes it). A later call with the same prefix on the same key
 * is expected to read that many tokens; when the rule says reads do not count
 * (Anthropic's current models), they need not be reserved. A miss is not a
 * failure: the settlement charges what the provider counted, as for any
 * under-estimate, and the prediction is dropped.
 *
 * Calls made before the first answer reserve their whole prompt: nothing is
 * known to be cached yet.
 */
import type * as LlmClient from "../LlmClient.js"

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

const isMarked = (block: LlmClient.ContentBlock): boolean => block.type === "text" && block.cacheControl !== undefined

/**
 * The identity of a request's cached prefix on `key`, or `undefined` when it
 * marks nothing to cache. Two requests that differ only after their last
 * breakpoint share it.
 */
export const prefixId = (request: LlmClient.Request, key: string): string | undefined => {
  let lastMessage = -1
  let lastBlock = -1
  request.messages.forEach((message, m) => {
    if (typeof message.content === "string") return
    message.content.forEach((block, b) => {
      if (isMarked(block)) {
        lastMessage = m
        lastBlock = b
      }
    })
  })
  if (lastMessage < 0 && request.systemCacheControl === undefined) return undefined
  const messages = lastMessage < 0
    ? []
    : [
      ...request.messages.slice(0, lastMessage),
      { ...request.messages[lastMessage]!, content: (request.messages[lastMessage]!.content as ReadonlyArray<LlmClient.ContentBlock>).slice(0, lastBlock + 1) }
    ]
  return `${key}\u0000${request.model}\u0000${hash(JSON.stringify([request.tools ?? [], request.system ?? "", messages]))}`
}

/** Cached prefixes the Governor has seen answered, with their length and when they expire. */
export interface Predictor {
  /** Tokens a call with this prefix is expected to read from the cache at `now` (0: nothing known). */
  readonly expected: (id: string, now: number) => number
  /** Folds in what an answered call read and wrote. */
  readonly learn: (id: string, usage: LlmClient.Usage, now: number) => void
}

/** A predictor holding at most `maxEntries` prefixes (the least recently answered go first). */
export const makePredictor = (options: { readonly ttlMillis: number; readonly maxEntries: number }): Predictor => {
  const entries = new Map<string, { readonly tokens: number; readonly expiresAt: number }>()
  return {
    expected: (id, now) => {
      const entry = entries.get(id)
      if (entry === undefined) return 0
      if (entry.expiresAt <= now) {
        entries.delete(id)
        return 0
      }
      return entry.tokens
    },
    learn: (id, usage, now) => {
      const tokens = usage.cacheReadInputTokens + usage.cacheWriteInputTokens
      // Re-inserted so that the Map's order is the order of the last answer.
      entries.delete(id)
      if (!(tokens > 0)) return
      entries.set(id, { tokens, expiresAt: now + options.ttlMillis })
      if (entries.size > options.maxEntries) entries.delete(entries.keys().next().value!)
    }
  }
}
