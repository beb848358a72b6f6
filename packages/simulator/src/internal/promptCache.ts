/**
 * The simulated prompt cache, as the Messages API does it: a block marked
 * `cache_control` caches the prefix up to and including it (tools, then
 * system, then messages), per API key and model, for a lifetime refreshed by
 * each read. A call reads the longest live prefix and writes the marked
 * prefixes past it that reach the minimum length. Planning a call's reads and
 * writes ({@link plan}) is apart from keeping them ({@link commit}), so that a
 * call the quota refuses leaves the cache as it was.
 */
import { hash } from "./hash.js"
import { countTokens } from "./tokens.js"

/** The most blocks a request may mark with `cache_control`, as on the real API. */
export const maxBreakpoints = 4

/** How many blocks before a breakpoint the cache is also looked up at, as on the real API. */
const lookback = 20

/**
 * A prefix of a request (tools, then system, then messages, in that order)
 * where the cache is looked up or written.
 */
export interface CachePrefix {
  /** The prefix's identity: a hash of its content, `cache_control` markers aside. */
  readonly id: string
  /** The index of its last block in the request's block order. */
  readonly position: number
  /** Whether that block is marked `cache_control`: the prefix is written when it is not already cached. */
  readonly breakpoint: boolean
  /** The prefix's input tokens by the simulator's count, computed when needed. */
  readonly tokens: () => number
}

const isMarked = (block: unknown): boolean =>
  typeof block === "object" && block !== null && (block as Record<string, unknown>).cache_control != null

const withoutCacheControl = (key: string, value: unknown) => key === "cache_control" ? undefined : value

/** The number of blocks a request marks with `cache_control`. */
export const countBreakpoints = (body: unknown): number => {
  if (typeof body !== "object" || body === null) return 0
  const record = body as Record<string, unknown>
  let count = 0
  if (Array.isArray(record.tools)) count += record.tools.filter(isMarked).length
  if (Array.isArray(record.system)) count += record.system.filter(isMarked).length
  if (Array.isArray(record.messages)) {
    for (const message of record.messages) {
      const content = typeof message === "object" && message !== null
        ? (message as Record<string, unknown>).content
        : undefined
      if (Array.isArray(content)) count += content.filter(isMarked).length
    }
  }
  return count
}

/**
 * The prefixes of a request at which the prompt cache is consulted: each block
 * marked `cache_control`, and the blocks up to 20 before it (so that a
 * conversation that moves its breakpoint forward still reads what the last turn
 * wrote). Empty when nothing is marked. In block order.
 */
export const cachePrefixes = (body: unknown): ReadonlyArray<CachePrefix> => {
  if (typeof body !== "object" || body === null) return []
  const record = body as Record<string, unknown>
  const tools: ReadonlyArray<unknown> = Array.isArray(record.tools) ? record.tools : []
  const system: unknown = record.system
  const messages: ReadonlyArray<{ readonly role?: unknown; readonly content?: unknown }> =
    Array.isArray(record.messages) ? record.messages : []
  // Every block in order, with the prefix body that ends at it.
  const blocks: Array<{ readonly block: unknown; readonly kind: string; readonly prefix: () => unknown }> = []
  tools.forEach((tool, i) =>
    blocks.push({ block: tool, kind: "tool", prefix: () => ({ tools: tools.slice(0, i + 1) }) })
  )
  if (Array.isArray(system)) {
    system.forEach((block, i) =>
      blocks.push({ block, kind: "system", prefix: () => ({ tools, system: system.slice(0, i + 1) }) })
    )
  } else if (typeof system === "string" && system !== "") {
    blocks.push({ block: system, kind: "system", prefix: () => ({ tools, system }) })
  }
  messages.forEach((message, m) => {
    const before = messages.slice(0, m)
    const kind = `message:${String(message?.role)}`
    const content = message?.content
    if (Array.isArray(content)) {
      content.forEach((block, b) =>
        blocks.push({
          block,
          kind: b === 0 ? `${kind}:start` : kind,
          prefix: () => ({ tools, system, messages: [...before, { ...message, content: content.slice(0, b + 1) }] })
        })
      )
    } else {
      blocks.push({
        block: content,
        kind: `${kind}:start`,
        prefix: () => ({ tools, system, messages: [...before, message] })
      })
    }
  })
  const marked = blocks.flatMap((entry, position) => isMarked(entry.block) ? [position] : [])
  if (marked.length === 0) return []
  const wanted = new Set<number>()
  for (const position of marked) {
    for (let p = Math.max(0, position - lookback); p <= position; p++) wanted.add(p)
  }
  // Two chained hashes over the blocks' content: a prefix's id depends on every block before it.
  const prefixes: Array<CachePrefix> = []
  let chainA = ""
  let chainB = ""
  const last = marked[marked.length - 1]!
  for (let position = 0; position <= last; position++) {
    const entry = blocks[position]!
    const json = `${entry.kind}|${JSON.stringify(entry.block, withoutCacheControl) ?? ""}`
    chainA = hash(`${chainA}|${json}`).toString(36)
    chainB = hash(`${json}|${chainB}|${json.length}`).toString(36)
    if (!wanted.has(position)) continue
    let tokens: number | undefined
    prefixes.push({
      id: `${position}.${chainA}.${chainB}`,
      position,
      breakpoint: isMarked(entry.block),
      tokens: () => tokens ??= countTokens(entry.prefix())
    })
  }
  return prefixes
}

/** How a call's input splits between plain input, cache reads and cache writes. */
export interface CacheUsage {
  /** Input neither read from nor written to the cache. */
  readonly inputTokens: number
  readonly cacheReadInputTokens: number
  readonly cacheWriteInputTokens: number
}

/** The simulated prompt cache's settings (Anthropic's `cache_control: { type: "ephemeral" }`). */
export interface PromptCache {
  /** How long a cached prefix lives, in simulated seconds, refreshed by each read. Default 300 (Anthropic's 5 minutes). */
  readonly ttlSeconds?: number | undefined
  /**
   * The shortest prefix that is cached, in tokens: a shorter one is billed as
   * plain input, as the real API does. Default 1,024 (Anthropic's minimum for
   * Sonnet and Opus; some models need more).
   */
  readonly minimumTokens?: number | undefined
}

/** The cached prefixes of one API key and model. */
export interface Store {
  /** Prefix id to the time (in the engine's clock) it expires. */
  readonly expiries: Map<string, number>
  /** When expired prefixes are next swept out: at most once per lifetime, so the map stays bounded by what one lifetime wrote. */
  nextSweep: number
}

/** An empty store whose first sweep is one lifetime away. */
export const makeStore = (now: number, ttlMs: number): Store => ({ expiries: new Map(), nextSweep: now + ttlMs })

/** What a call reads and writes: the live prefix it reads (if any), the prefixes it writes, and its input split. */
export interface Plan {
  readonly hit: CachePrefix | undefined
  readonly writes: ReadonlyArray<CachePrefix>
  readonly usage: CacheUsage
}

/** What the cache reads and writes for a call: the longest live prefix is read, the breakpoints past it written. */
export const plan = (
  store: Store,
  minimumTokens: number,
  inputTokens: number,
  prefixes: ReadonlyArray<CachePrefix>,
  now: number
): Plan => {
  let hit: CachePrefix | undefined
  for (let i = prefixes.length - 1; i >= 0 && hit === undefined; i--) {
    const expires = store.expiries.get(prefixes[i]!.id)
    if (expires !== undefined && expires > now) hit = prefixes[i]
  }
  const read = Math.min(inputTokens, hit?.tokens() ?? 0)
  const writes = prefixes.filter((prefix) =>
    prefix.breakpoint && prefix.position > (hit?.position ?? -1) && prefix.tokens() >= minimumTokens
  )
  const written = writes.length === 0 ? read : Math.min(inputTokens, writes[writes.length - 1]!.tokens())
  const usage: CacheUsage = {
    inputTokens: inputTokens - Math.max(read, written),
    cacheReadInputTokens: read,
    cacheWriteInputTokens: Math.max(0, written - read)
  }
  return { hit, writes, usage }
}

/** Keeps an admitted call's plan: the prefix it read lives another lifetime, the ones it wrote start theirs. */
export const commit = (store: Store, plan: Plan, ttlMs: number, now: number): void => {
  if (now >= store.nextSweep) {
    for (const [id, expires] of store.expiries) if (expires <= now) store.expiries.delete(id)
    store.nextSweep = now + ttlMs
  }
  if (plan.hit !== undefined) store.expiries.set(plan.hit.id, now + ttlMs)
  for (const prefix of plan.writes) store.expiries.set(prefix.id, now + ttlMs)
}
