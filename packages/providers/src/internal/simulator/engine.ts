/**
 * The simulator's quota model, token counting and answers, with no HTTP: the
 * server and the in-process client both sit on it. Time comes only from the
 * Effect `Clock` and randomness only from `Random`, so it runs under `TestClock`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import * as TokenBucket from "@sluice/core/TokenBucket"
import * as ToolOverhead from "@sluice/core/ToolOverhead"

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

export interface Quota {
  readonly requestsPerMinute: number
  readonly inputTokensPerMinute: number
  readonly outputTokensPerMinute: number
  /** OpenAI's combined tokens-per-minute; input + output limits when absent. */
  readonly tokensPerMinute?: number | undefined
}

export interface Faults {
  readonly overloadedRate?: number | undefined
  readonly serverErrorRate?: number | undefined
  readonly resetRate?: number | undefined
  readonly malformedRate?: number | undefined
  readonly bursts?: ReadonlyArray<{ readonly startSeconds: number; readonly durationSeconds: number; readonly status: 429 | 529 | 503 }> | undefined
}

export interface Latency {
  readonly baseMs?: number | undefined
  readonly perOutputTokenMs?: number | undefined
  readonly jitterMs?: number | undefined
}

/** The simulated prompt cache (Anthropic's `cache_control: { type: "ephemeral" }`). */
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

export interface EngineConfig {
  readonly quota?: Quota | undefined
  readonly quotas?: { readonly [apiKey: string]: Quota } | undefined
  readonly timeScale?: number | undefined
  readonly latency?: Latency | undefined
  readonly faults?: Faults | undefined
  readonly foreignLoad?: { readonly share: number } | undefined
  readonly seed?: number | undefined
  readonly promptCache?: PromptCache | undefined
}

/** Anthropic's tier-1 limits for Sonnet: 50 requests, 30,000 input and 8,000 output tokens a minute. */
export const defaultQuota: Quota = { requestsPerMinute: 50, inputTokensPerMinute: 30_000, outputTokensPerMinute: 8_000 }

// ---------------------------------------------------------------------------
// Token counting: the simulator's own method, deliberately not tiktoken's
// ---------------------------------------------------------------------------

/**
 * Tokens of a text by the simulator's rule: one per 4.2 characters, plus a
 * third of a token for every character that is neither a letter nor a space
 * (digits and punctuation cost more), rounded up. English prose comes out some
 * 10–25 % away from tiktoken's count, in a way that depends on the text.
 */
export const countText = (text: string): number => {
  if (text.length === 0) return 0
  let symbols = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    const letter = (code >= 65 && code <= 90) || (code >= 97 && code <= 122)
    if (!letter && code !== 32 && code !== 10) symbols++
  }
  return Math.ceil(text.length / 4.2 + symbols / 3)
}

const perRequestOverhead = 7
const perMessageOverhead = 4
const perToolOverhead = 12

const blockText = (block: unknown): string => {
  if (typeof block === "string") return block
  if (typeof block !== "object" || block === null) return ""
  const record = block as Record<string, unknown>
  switch (record.type) {
    case "text":
      return typeof record.text === "string" ? record.text : ""
    case "tool_use":
      return `${String(record.name ?? "")} ${JSON.stringify(record.input ?? {})}`
    case "tool_result":
      return typeof record.content === "string"
        ? record.content
        : Array.isArray(record.content) ? record.content.map(blockText).join("\n") : ""
    default:
      return ""
  }
}

/** The text of one message's content (a string or blocks). */
export const contentText = (content: unknown): string =>
  typeof content === "string" ? content : Array.isArray(content) ? content.map(blockText).join("\n") : ""

/** The simulator's input-token count of an Anthropic- or OpenAI-style request body. */
export const countTokens = (body: unknown): number => {
  if (typeof body !== "object" || body === null) return 0
  const record = body as Record<string, unknown>
  let total = perRequestOverhead
  const system = record.system
  if (typeof system === "string") total += countText(system) + perMessageOverhead
  else if (Array.isArray(system)) total += countText(system.map(blockText).join("\n")) + perMessageOverhead
  if (Array.isArray(record.messages)) {
    for (const message of record.messages) {
      const content = typeof message === "object" && message !== null ? (message as Record<string, unknown>).content : undefined
      total += countText(contentText(content)) + perMessageOverhead
    }
  }
  if (Array.isArray(record.tools)) {
    for (const tool of record.tools) total += countText(JSON.stringify(tool)) + perToolOverhead
    total += toolUsePrompt(record)
  }
  return total
}

/**
 * The hidden tool-use system prompt Anthropic adds (and counts) for a request
 * that offers tools, by model and tool choice: 313 tokens for a forced tool on
 * Claude 4.x. Only an Anthropic-shaped body that names its model pays it; the
 * OpenAI path counts its own per-function overhead.
 */
const toolUsePrompt = (record: Record<string, unknown>): number => {
  if (typeof record.model !== "string" || !Array.isArray(record.tools) || record.tools.length === 0) return 0
  const choice = record.tool_choice
  const type = typeof choice === "object" && choice !== null ? (choice as Record<string, unknown>).type : undefined
  return ToolOverhead.tokensFor(
    ToolOverhead.defaultTable,
    record.model,
    type === "any" ? { type: "any" } : type === "tool" ? { type: "tool", name: "" } : undefined,
    "anthropic"
  )
}

// ---------------------------------------------------------------------------
// Answers, deterministic from the content
// ---------------------------------------------------------------------------

/** FNV-1a, for deterministic variation. */
export const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

const stopwords = new Set(
  "a an and are as at be but by for from has have he her his i in into is it its of on or our she that the their them they this to was we were will with you your not no so if than then there these those which who what when where how all any can could would should may might also more most very just about over under after before between".split(" ")
)
const positiveWords = new Set("good great excellent strong growth grew gain gains delighted happy success successful improved improve wonderful positive record best win wins benefit love".split(" "))
const negativeWords = new Set("bad poor weak loss losses decline declined fell fail failed failure risk problem problems negative worst crisis concern concerns angry sad lawsuit".split(" "))

const wordsOf = (text: string): ReadonlyArray<string> => text.toLowerCase().match(/[a-z][a-z'-]+/g) ?? []

const keywordsOf = (text: string, count: number): ReadonlyArray<string> => {
  const frequency = new Map<string, number>()
  for (const word of wordsOf(text)) {
    if (word.length < 4 || stopwords.has(word)) continue
    frequency.set(word, (frequency.get(word) ?? 0) + 1)
  }
  return [...frequency.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, count).map(([word]) => word)
}

const titleOf = (text: string): string => {
  const firstLine = text.trim().split("\n")[0]?.trim() ?? ""
  const words = firstLine.split(/\s+/).filter((word) => word !== "")
  return words.slice(0, 8).join(" ") || "Untitled"
}

const summaryOf = (text: string): string => {
  const sentences = text.replace(/\s+/g, " ").trim().match(/[^.!?]+[.!?]?/g) ?? []
  const summary = sentences.slice(0, 2).join(" ").trim()
  return summary.length > 300 ? `${summary.slice(0, 297)}...` : summary || "No content."
}

const sentimentScore = (text: string): number => {
  let score = 0
  for (const word of wordsOf(text)) {
    if (positiveWords.has(word)) score++
    if (negativeWords.has(word)) score--
  }
  return score
}

const pickEnum = (values: ReadonlyArray<unknown>, name: string, text: string): unknown => {
  if (values.length === 0) return null
  if (/sentiment|tone|mood/i.test(name)) {
    const score = sentimentScore(text)
    const wanted = score > 0 ? /pos/i : score < 0 ? /neg/i : /neu|mixed/i
    const match = values.find((value) => typeof value === "string" && wanted.test(value))
    if (match !== undefined) return match
  }
  // A value named in the text wins; else one chosen by the text's hash.
  const lower = text.toLowerCase()
  const named = values.find((value) => typeof value === "string" && value.length > 2 && lower.includes(value.toLowerCase()))
  if (named !== undefined) return named
  for (const keyword of keywordsOf(text, 10)) {
    const related = values.find((value) => typeof value === "string" && value.toLowerCase().startsWith(keyword.slice(0, 4)))
    if (related !== undefined) return related
  }
  return values[hash(text) % values.length]
}

/** A value for a JSON schema, filled from the text; the same text always gives the same value. */
export const fillSchema = (schema: unknown, text: string, name = ""): unknown => {
  const node = (typeof schema === "object" && schema !== null ? schema : {}) as Record<string, unknown>
  if (Array.isArray(node.enum)) return pickEnum(node.enum, name, text)
  const type = Array.isArray(node.type) ? node.type.find((item) => item !== "null") : node.type
  switch (type) {
    case "object": {
      const properties = (typeof node.properties === "object" && node.properties !== null ? node.properties : {}) as Record<string, unknown>
      return Object.fromEntries(Object.entries(properties).map(([key, value]) => [key, fillSchema(value, text, key)]))
    }
    case "array": {
      const wanted = typeof node.minItems === "number" ? Math.max(node.minItems, 5) : 5
      const count = typeof node.maxItems === "number" ? Math.min(node.maxItems, wanted) : wanted
      if (/keyword|tag|topic/i.test(name) || (node.items as Record<string, unknown> | undefined)?.type === "string") {
        const keywords = keywordsOf(text, count)
        return keywords.length > 0 ? keywords : ["none"]
      }
      return Array.from({ length: Math.min(count, 3) }, (_, i) => fillSchema(node.items, `${text} ${i}`, name))
    }
    case "number":
      return (hash(`${name}:${text}`) % 1000) / 10
    case "integer":
      return hash(`${name}:${text}`) % 100
    case "boolean":
      return hash(`${name}:${text}`) % 2 === 0
    default: {
      if (/title|headline|name/i.test(name)) return titleOf(text)
      if (/summary|abstract|description/i.test(name)) return summaryOf(text)
      if (/sentiment/i.test(name)) return sentimentScore(text) > 0 ? "positive" : sentimentScore(text) < 0 ? "negative" : "neutral"
      if (/categor|topic|label/i.test(name)) return keywordsOf(text, 1)[0] ?? "general"
      return summaryOf(text).slice(0, 80)
    }
  }
}

/** A plain-text answer of about `tokens` tokens, made from the words of the prompt. */
export const textAnswer = (prompt: string, tokens: number): string => {
  const words = wordsOf(prompt)
  const source = words.length > 0 ? words : ["ok"]
  const out: Array<string> = []
  let length = 0
  for (let i = 0; countText(out.join(" ")) < tokens && i < tokens * 4; i++) {
    const word = source[(hash(prompt) + i * 7) % source.length]!
    out.push(i === 0 ? word[0]!.toUpperCase() + word.slice(1) : word)
    length += word.length + 1
  }
  return length === 0 ? "Ok." : `${out.join(" ")}.`
}

/** How long the answer to a prompt runs: between 30 % and 100 % of `maxTokens`, at most 400, by the prompt's hash. */
export const answerLength = (prompt: string, maxTokens: number): number => {
  const fraction = 0.3 + 0.7 * ((hash(prompt) % 1000) / 1000)
  return Math.max(1, Math.min(maxTokens, Math.round(Math.min(400, maxTokens) * fraction)))
}

// ---------------------------------------------------------------------------
// Requests and what the model writes
// ---------------------------------------------------------------------------

export interface MessagesBody {
  readonly model: string
  readonly max_tokens: number
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: unknown }>
  readonly system?: unknown
  readonly tools?: ReadonlyArray<{ readonly name: string; readonly input_schema?: unknown; readonly parameters?: unknown }>
  readonly tool_choice?: unknown
  readonly stream?: boolean
}

export const lastUserText = (body: MessagesBody): string => {
  for (let i = body.messages.length - 1; i >= 0; i--) {
    const message = body.messages[i]!
    if (message.role === "user") return contentText(message.content)
  }
  return ""
}

/** The tool to answer with, if the request asks for one. */
export const chosenTool = (body: MessagesBody): { readonly name: string; readonly schema: unknown } | undefined => {
  const tools = body.tools ?? []
  if (tools.length === 0) return undefined
  const choice = body.tool_choice as { type?: string; name?: string; function?: { name?: string } } | string | undefined
  if (choice === "none" || (typeof choice === "object" && choice?.type === "none")) return undefined
  const wanted = typeof choice === "object" ? choice?.name ?? choice?.function?.name : undefined
  const tool = tools.find((candidate) => candidate.name === wanted) ?? tools[0]!
  const schema = tool.input_schema ?? (tool as { function?: { parameters?: unknown } }).function?.parameters ?? tool.parameters
  const name = tool.name ?? (tool as { function?: { name?: string } }).function?.name ?? "tool"
  return { name, schema }
}

/** What the model "writes" for a request: a tool call or a text, and its output tokens. */
export const answerFor = (body: MessagesBody) => {
  const prompt = lastUserText(body)
  const tool = chosenTool(body)
  if (tool !== undefined) {
    const input = fillSchema(tool.schema, prompt) as Record<string, unknown>
    const outputTokens = countText(JSON.stringify(input)) + 9
    const stop = outputTokens > body.max_tokens ? "max_tokens" : "tool_use"
    return { kind: "tool" as const, tool: tool.name, input, outputTokens: Math.min(outputTokens, body.max_tokens), stop }
  }
  const text = textAnswer(prompt, answerLength(prompt, body.max_tokens))
  return { kind: "text" as const, text, outputTokens: Math.min(body.max_tokens, countText(text)), stop: "end_turn" }
}


// ---------------------------------------------------------------------------
// Prompt caching: prefixes up to a block marked `cache_control`
// ---------------------------------------------------------------------------

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
      const content = typeof message === "object" && message !== null ? (message as Record<string, unknown>).content : undefined
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
  const messages: ReadonlyArray<{ readonly role?: unknown; readonly content?: unknown }> = Array.isArray(record.messages) ? record.messages : []
  // Every block in order, with the prefix body that ends at it.
  const blocks: Array<{ readonly block: unknown; readonly kind: string; readonly prefix: () => unknown }> = []
  tools.forEach((tool, i) => blocks.push({ block: tool, kind: "tool", prefix: () => ({ tools: tools.slice(0, i + 1) }) }))
  if (Array.isArray(system)) {
    system.forEach((block, i) => blocks.push({ block, kind: "system", prefix: () => ({ tools, system: system.slice(0, i + 1) }) }))
  } else if (typeof system === "string" && system !== "") {
    blocks.push({ block: system, kind: "system", prefix: () => ({ tools, system }) })
  }
  messages.forEach((message, m) => {
    const before = messages.slice(0, m)
    const kind = `message:${String(message?.role)}`
    const content = message?.content
    if (Array.isArray(content)) {
      content.forEach((block, b) =>
        blocks.push({ block, kind: b === 0 ? `${kind}:start` : kind, prefix: () => ({ tools, system, messages: [...before, { ...message, content: content.slice(0, b + 1) }] }) }))
    } else {
      blocks.push({ block: content, kind: `${kind}:start`, prefix: () => ({ tools, system, messages: [...before, message] }) })
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

// ---------------------------------------------------------------------------
// Quotas and stats
// ---------------------------------------------------------------------------

export type Flavour = "anthropic" | "openai"

export type Dimension = "requests" | "inputTokens" | "outputTokens" | "tokens"

interface Seconds {
  requests: number
  inputTokens: number
  outputTokens: number
}

interface Entry {
  readonly apiKey: string
  readonly model: string
  readonly quota: Quota
  buckets: Record<Dimension, TokenBucket.TokenBucket>
  accepted: number
  rateLimited: number
  overloaded: number
  serverErrors: number
  resets: number
  inputTokens: number
  outputTokens: number
  cacheReadInputTokens: number
  cacheWriteInputTokens: number
  foreignInputTokens: number
  /** Accepted usage per simulated second, for the best minute's utilisation. */
  readonly perSecond: Map<number, Seconds>
  /** Cached prefixes of this key and model: id to the time it expires. */
  readonly cache: Map<string, number>
  /** When expired prefixes are next swept out. */
  nextSweep: number
}

export interface KeyStats {
  readonly apiKey: string
  readonly model: string
  readonly accepted: number
  readonly rateLimited: number
  readonly overloaded: number
  readonly serverErrors: number
  readonly resets: number
  /** Input accepted that was neither read from nor written to the prompt cache. */
  readonly inputTokens: number
  readonly outputTokens: number
  /** Input read from the prompt cache: free against the input-token limit. */
  readonly cacheReadInputTokens: number
  /** Input written to the prompt cache: counted against the input-token limit. */
  readonly cacheWriteInputTokens: number
  readonly foreignInputTokens: number
  /** The busiest minute's use of each limit; input counts what the limit charged (uncached + cache writes). */
  readonly bestMinuteUtilisation: { readonly requests: number; readonly inputTokens: number; readonly outputTokens: number }
}

/** Headers' worth of one bucket: its limit, what remains and how long until it is full. */
export interface BucketView {
  readonly limit: number
  readonly remaining: number
  /** Real milliseconds until the bucket is full again. */
  readonly fullAfterMs: number
}

export type Views = Record<Dimension, BucketView>

export type Admission =
  | { readonly _tag: "Admitted"; readonly views: Views; readonly usage: CacheUsage }
  | { readonly _tag: "Limited"; readonly views: Views; readonly dimension: Dimension; readonly retryAfterMs: number; readonly limit: number }

/** What a fault roll decided for one request. */
export type Fault = "none" | "overloaded" | "server-error" | "reset" | "malformed" | "rate-limited"

export interface Engine {
  readonly config: EngineConfig
  /** Real milliseconds per simulated minute. */
  readonly minuteMs: number
  /**
   * Admits a call whose input is `inputTokens`, or says which limit it would
   * exceed. With `prefixes` (from {@link cachePrefixes}), the longest cached one
   * is read and the breakpoints past it are written; an Anthropic call's input
   * limit is charged for plain input and cache writes, not for cache reads.
   */
  readonly admit: (
    apiKey: string,
    model: string,
    inputTokens: number,
    flavour: Flavour,
    maxTokens: number,
    prefixes?: ReadonlyArray<CachePrefix>
  ) => Effect.Effect<Admission>
  /** Charges the output of an admitted call and answers the headers after it. */
  readonly finish: (apiKey: string, model: string, outputTokens: number, flavour: Flavour) => Effect.Effect<Views>
  readonly views: (apiKey: string, model: string) => Effect.Effect<Views>
  readonly fault: (apiKey: string, model: string) => Effect.Effect<Fault>
  readonly latency: (outputTokens: number) => Effect.Effect<void>
  readonly stats: Effect.Effect<{ readonly keys: ReadonlyArray<KeyStats> }>
  readonly reset: Effect.Effect<void>
}

const perMinute = (limit: number, minuteMs: number, now: number) =>
  TokenBucket.make({ capacity: limit, ratePerMilli: limit / minuteMs, now })

const bucketsFor = (quota: Quota, minuteMs: number, now: number): Record<Dimension, TokenBucket.TokenBucket> => ({
  requests: perMinute(quota.requestsPerMinute, minuteMs, now),
  inputTokens: perMinute(quota.inputTokensPerMinute, minuteMs, now),
  outputTokens: perMinute(quota.outputTokensPerMinute, minuteMs, now),
  tokens: perMinute(quota.tokensPerMinute ?? quota.inputTokensPerMinute + quota.outputTokensPerMinute, minuteMs, now)
})

const viewOf = (bucket: TokenBucket.TokenBucket, now: number): BucketView => {
  const level = TokenBucket.levelAt(bucket, now)
  return {
    limit: bucket.capacity,
    remaining: Math.max(0, Math.floor(level)),
    fullAfterMs: Math.max(0, Math.ceil((bucket.capacity - level) / bucket.ratePerMilli))
  }
}

const viewsOf = (entry: Entry, now: number): Views => ({
  requests: viewOf(entry.buckets.requests, now),
  inputTokens: viewOf(entry.buckets.inputTokens, now),
  outputTokens: viewOf(entry.buckets.outputTokens, now),
  tokens: viewOf(entry.buckets.tokens, now)
})

const bestMinute = (entry: Entry): KeyStats["bestMinuteUtilisation"] => {
  const seconds = [...entry.perSecond.keys()].sort((a, b) => a - b)
  let best = { requests: 0, inputTokens: 0, outputTokens: 0 }
  let start = 0
  const sum = { requests: 0, inputTokens: 0, outputTokens: 0 }
  for (let end = 0; end < seconds.length; end++) {
    const second = entry.perSecond.get(seconds[end]!)!
    sum.requests += second.requests
    sum.inputTokens += second.inputTokens
    sum.outputTokens += second.outputTokens
    while (seconds[end]! - seconds[start]! >= 60) {
      const old = entry.perSecond.get(seconds[start]!)!
      sum.requests -= old.requests
      sum.inputTokens -= old.inputTokens
      sum.outputTokens -= old.outputTokens
      start++
    }
    best = {
      requests: Math.max(best.requests, sum.requests / entry.quota.requestsPerMinute),
      inputTokens: Math.max(best.inputTokens, sum.inputTokens / entry.quota.inputTokensPerMinute),
      outputTokens: Math.max(best.outputTokens, sum.outputTokens / entry.quota.outputTokensPerMinute)
    }
  }
  return best
}

/** Builds an engine; its foreign-load fiber (if any) lives in the scope. */
export const make = (config: EngineConfig): Effect.Effect<Engine, never, Scope.Scope> =>
  Effect.gen(function*() {
    const timeScale = config.timeScale !== undefined && config.timeScale > 0 ? config.timeScale : 1
    const minuteMs = 60_000 / timeScale
    const entries = new Map<string, Entry>()
    const random = Random.make(config.seed ?? 1)
    const startedAt = yield* Clock.currentTimeMillis
    const startRef = yield* Ref.make(startedAt)

    const cacheTtlMs = (config.promptCache?.ttlSeconds ?? 300) * (minuteMs / 60)
    const cacheMinimum = config.promptCache?.minimumTokens ?? 1_024

    /** What the cache reads and writes for a call: the longest live prefix is read, the breakpoints past it written. */
    const planCache = (entry: Entry, inputTokens: number, prefixes: ReadonlyArray<CachePrefix>, now: number) => {
      let hit: CachePrefix | undefined
      for (let i = prefixes.length - 1; i >= 0 && hit === undefined; i--) {
        const expires = entry.cache.get(prefixes[i]!.id)
        if (expires !== undefined && expires > now) hit = prefixes[i]
      }
      const read = Math.min(inputTokens, hit?.tokens() ?? 0)
      const writes = prefixes.filter((prefix) => prefix.breakpoint && prefix.position > (hit?.position ?? -1) && prefix.tokens() >= cacheMinimum)
      const written = writes.length === 0 ? read : Math.min(inputTokens, writes[writes.length - 1]!.tokens())
      const usage: CacheUsage = {
        inputTokens: inputTokens - Math.max(read, written),
        cacheReadInputTokens: read,
        cacheWriteInputTokens: Math.max(0, written - read)
      }
      return { hit, writes, usage }
    }

    const commitCache = (entry: Entry, plan: ReturnType<typeof planCache>, now: number) => {
      if (now >= entry.nextSweep) {
        for (const [id, expires] of entry.cache) if (expires <= now) entry.cache.delete(id)
        entry.nextSweep = now + cacheTtlMs
      }
      if (plan.hit !== undefined) entry.cache.set(plan.hit.id, now + cacheTtlMs)
      for (const prefix of plan.writes) entry.cache.set(prefix.id, now + cacheTtlMs)
    }

    const quotaFor = (apiKey: string): Quota => config.quotas?.[apiKey] ?? config.quota ?? defaultQuota

    const entryFor = (apiKey: string, model: string, now: number): Entry => {
      const id = `${apiKey}\u0000${model}`
      let entry = entries.get(id)
      if (entry === undefined) {
        const quota = quotaFor(apiKey)
        entry = {
          apiKey,
          model,
          quota,
          buckets: bucketsFor(quota, minuteMs, now),
          accepted: 0,
          rateLimited: 0,
          overloaded: 0,
          serverErrors: 0,
          resets: 0,
          inputTokens: 0,
          outputTokens: 0,
          cacheReadInputTokens: 0,
          cacheWriteInputTokens: 0,
          foreignInputTokens: 0,
          perSecond: new Map(),
          cache: new Map(),
          nextSweep: now + cacheTtlMs
        }
        entries.set(id, entry)
      }
      return entry
    }

    const record = (entry: Entry, now: number, usage: Partial<Seconds>) => {
      const second = Math.floor((now - startedAt) / (minuteMs / 60))
      const slot = entry.perSecond.get(second) ?? { requests: 0, inputTokens: 0, outputTokens: 0 }
      slot.requests += usage.requests ?? 0
      slot.inputTokens += usage.inputTokens ?? 0
      slot.outputTokens += usage.outputTokens ?? 0
      entry.perSecond.set(second, slot)
    }

    const admit = (apiKey: string, model: string, inputTokens: number, flavour: Flavour, maxTokens: number, prefixes: ReadonlyArray<CachePrefix> = []) =>
      Effect.map(Clock.currentTimeMillis, (now): Admission => {
        const entry = entryFor(apiKey, model, now)
        const plan = planCache(entry, inputTokens, prefixes, now)
        // Anthropic's rule: cache reads are free against the input limit, writes count. OpenAI counts all input.
        const charged = flavour === "anthropic" ? plan.usage.inputTokens + plan.usage.cacheWriteInputTokens : inputTokens
        // Anthropic: requests, input, and some output left. OpenAI: requests and input + max_tokens in one bucket.
        const needs: ReadonlyArray<readonly [Dimension, number]> = flavour === "anthropic"
          ? [["requests", 1], ["inputTokens", charged], ["outputTokens", 1]]
          : [["requests", 1], ["tokens", charged + maxTokens]]
        let worst: { dimension: Dimension; at: number } | undefined
        for (const [dimension, amount] of needs) {
          const at = TokenBucket.fitsAt(entry.buckets[dimension], amount, now)
          if (at > now && (worst === undefined || at > worst.at)) worst = { dimension, at }
        }
        if (worst !== undefined) {
          entry.rateLimited++
          const retryAfterMs = Number.isFinite(worst.at) ? Math.max(1, Math.ceil(worst.at - now)) : 60_000
          return { _tag: "Limited", views: viewsOf(entry, now), dimension: worst.dimension, retryAfterMs, limit: entry.buckets[worst.dimension].capacity }
        }
        for (const [dimension, amount] of needs) {
          // Anthropic charges output after the answer; the probe of 1 is not taken.
          if (dimension === "outputTokens") continue
          entry.buckets[dimension] = TokenBucket.take(entry.buckets[dimension], amount, now)
        }
        if (flavour === "anthropic") entry.buckets.tokens = TokenBucket.take(entry.buckets.tokens, charged, now)
        commitCache(entry, plan, now)
        entry.accepted++
        entry.inputTokens += plan.usage.inputTokens
        entry.cacheReadInputTokens += plan.usage.cacheReadInputTokens
        entry.cacheWriteInputTokens += plan.usage.cacheWriteInputTokens
        record(entry, now, { requests: 1, inputTokens: charged })
        return { _tag: "Admitted", views: viewsOf(entry, now), usage: plan.usage }
      })

    const finish = (apiKey: string, model: string, outputTokens: number, flavour: Flavour) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = entryFor(apiKey, model, now)
        entry.buckets.outputTokens = TokenBucket.take(entry.buckets.outputTokens, outputTokens, now)
        // OpenAI reserved max_tokens in "tokens" at admission; Anthropic charges output now.
        if (flavour === "anthropic") entry.buckets.tokens = TokenBucket.take(entry.buckets.tokens, outputTokens, now)
        entry.outputTokens += outputTokens
        record(entry, now, { outputTokens })
        return viewsOf(entry, now)
      })

    const views = (apiKey: string, model: string) =>
      Effect.map(Clock.currentTimeMillis, (now) => viewsOf(entryFor(apiKey, model, now), now))

    const chance = (rate: number | undefined) =>
      rate === undefined || rate <= 0 ? Effect.succeed(false) : Effect.map(random.next, (draw) => draw < rate)

    const fault = (apiKey: string, model: string): Effect.Effect<Fault> =>
      Effect.gen(function*() {
        const faults = config.faults ?? {}
        const now = yield* Clock.currentTimeMillis
        const entry = entryFor(apiKey, model, now)
        const elapsedSeconds = (now - (yield* Ref.get(startRef))) / 1000
        const burst = faults.bursts?.find((b) => elapsedSeconds >= b.startSeconds && elapsedSeconds < b.startSeconds + b.durationSeconds)
        if (burst !== undefined) {
          if (burst.status === 429) {
            entry.rateLimited++
            return "rate-limited"
          }
          if (burst.status === 529) {
            entry.overloaded++
            return "overloaded"
          }
          entry.serverErrors++
          return "server-error"
        }
        if (yield* chance(faults.overloadedRate)) {
          entry.overloaded++
          return "overloaded"
        }
        if (yield* chance(faults.serverErrorRate)) {
          entry.serverErrors++
          return "server-error"
        }
        if (yield* chance(faults.resetRate)) {
          entry.resets++
          return "reset"
        }
        if (yield* chance(faults.malformedRate)) return "malformed"
        return "none"
      })

    const latency = (outputTokens: number) =>
      Effect.gen(function*() {
        const settings = config.latency ?? {}
        const jitter = settings.jitterMs === undefined || settings.jitterMs <= 0 ? 0 : (yield* random.next) * settings.jitterMs
        const millis = (settings.baseMs ?? 0) + (settings.perOutputTokenMs ?? 0) * outputTokens + jitter
        if (millis > 0) yield* Effect.sleep(Duration.millis(millis / timeScale))
      })

    const stats = Effect.sync(() => ({
      keys: [...entries.values()].map((entry): KeyStats => ({
        apiKey: entry.apiKey,
        model: entry.model,
        accepted: entry.accepted,
        rateLimited: entry.rateLimited,
        overloaded: entry.overloaded,
        serverErrors: entry.serverErrors,
        resets: entry.resets,
        inputTokens: entry.inputTokens,
        outputTokens: entry.outputTokens,
        cacheReadInputTokens: entry.cacheReadInputTokens,
        cacheWriteInputTokens: entry.cacheWriteInputTokens,
        foreignInputTokens: Math.round(entry.foreignInputTokens),
        bestMinuteUtilisation: bestMinute(entry)
      }))
    }))

    const reset = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.zipRight(Ref.set(startRef, now), Effect.sync(() => entries.clear())))

    // Another consumer on the same key: takes its share of every bucket's refill, tick by tick.
    const share = config.foreignLoad?.share ?? 0
    if (share > 0) {
      // One tick per simulated second.
      const tickMs = Math.max(1, minuteMs / 60)
      yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        yield* Effect.sleep(Duration.millis(tickMs))
        const now = yield* Clock.currentTimeMillis
        for (const entry of entries.values()) {
          for (const dimension of ["requests", "inputTokens", "outputTokens", "tokens"] as const) {
            const bucket = entry.buckets[dimension]
            // Taken whether or not the client left any: the other consumer competes at the same rate.
            const amount = share * bucket.ratePerMilli * tickMs
            entry.buckets[dimension] = TokenBucket.take(bucket, amount, now)
            if (dimension === "inputTokens") entry.foreignInputTokens += amount
          }
        }
      })))
    }

    return { config, minuteMs, admit, finish, views, fault, latency, stats, reset }
  })
