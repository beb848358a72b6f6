/**
 * The synthetic workload the examples share: documents of heavy-tailed length
 * and the extraction tool they are sent with.
 */
import type { LlmClient } from "@sluice/core"
import { Duration, Effect, Random } from "effect"

const vocabulary = (
  "revenue quarter growth market customer product launch team report risk cost margin cloud service analysis " +
  "forecast region sales contract supplier board strategy investment research patient trial data model system " +
  "network policy energy price demand inflation rate bank loan credit share dividend excellent strong weak decline"
).split(" ")

/** A document of heavy-tailed length (Pareto, 80 to 4,000 words), the same for the same id and seed. */
export const document = (id: number) =>
  Effect.gen(function*() {
    const words = Math.min(4_000, Math.round(80 / Math.pow(1 - (yield* Random.next), 1 / 1.2)))
    const parts: Array<string> = []
    for (let i = 0; i < words; i++) parts.push(vocabulary[yield* Random.nextIntBetween(0, vocabulary.length)]!)
    return { id: `doc-${id}`, text: `Report ${id}: ${parts.slice(0, 5).join(" ")}\n${parts.join(" ")}.` }
  })

/** `count` documents, deterministic for a seed. */
export const documents = (count: number, seed: number) =>
  Effect.forEach(Array.from({ length: count }, (_, i) => i), document).pipe(Effect.withRandom(Random.make(seed)))

/** The extraction tool: title, summary, keywords, category, sentiment. */
export const extraction: LlmClient.Tool = {
  name: "record_extraction",
  description: "Record the title, summary, keywords, category and sentiment of the document",
  inputSchema: {
    type: "object",
    properties: {
      title: { type: "string" },
      summary: { type: "string" },
      keywords: { type: "array", items: { type: "string" } },
      category: { type: "string", enum: ["finance", "technology", "health", "energy", "other"] },
      sentiment: { type: "string", enum: ["positive", "neutral", "negative"] }
    },
    required: ["title", "summary", "keywords", "category", "sentiment"]
  }
}

/** The extraction request for a document. */
export const extract = (model: string, doc: { readonly id: string; readonly text: string }): LlmClient.Request => ({
  model,
  system: "Extract the document's title, summary, keywords, category and sentiment with the tool.",
  messages: [{ role: "user", content: doc.text }],
  tools: [extraction],
  toolChoice: { type: "tool", name: "record_extraction" },
  maxOutputTokens: 400,
  metadata: { priority: "batch", documentId: doc.id }
})

/** A limiter quota from per-minute limits, with the minute compressed by `timeScale`. */
export const limiterQuota = (
  perMinute: {
    readonly requestsPerMinute: number
    readonly inputTokensPerMinute: number
    readonly outputTokensPerMinute: number
  },
  timeScale: number,
  share = 1
) => {
  const per = Duration.toMillis(Duration.seconds(60 / timeScale))
  return {
    requests: { limit: perMinute.requestsPerMinute * share, per },
    inputTokens: { limit: perMinute.inputTokensPerMinute * share, per },
    outputTokens: { limit: perMinute.outputTokensPerMinute * share, per }
  }
}
