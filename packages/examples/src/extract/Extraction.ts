/**
 * What the job extracts from a document, as a `Schema`: the tool the model is
 * asked to call is generated from it, and the model's answer is decoded with
 * it, so the two never disagree.
 */
import type { LlmClient } from "@sluice/core"
import { Data, Either, JSONSchema, ParseResult, Schema } from "effect"
import type { Document } from "./Documents.js"

export const categories = ["finance", "technology", "health", "energy", "other"] as const
export const sentiments = ["positive", "neutral", "negative"] as const

const Text = (max: number) => Schema.String.pipe(Schema.minLength(1), Schema.maxLength(max))

/** The answer of the extraction tool. */
export const Extraction = Schema.Struct({
  title: Text(300).annotations({ description: "The document's title, or a short one written for it" }),
  summary: Text(2_000).annotations({ description: "Two or three sentences" }),
  keywords: Schema.Array(Text(60)).pipe(Schema.minItems(1), Schema.maxItems(12)).annotations({
    description: "Up to 12 keywords"
  }),
  category: Schema.Literal(...categories),
  sentiment: Schema.Literal(...sentiments)
})
export type Extraction = typeof Extraction.Type

const withoutDialect = (schema: object): Record<string, unknown> =>
  Object.fromEntries(Object.entries(schema).filter(([key]) => key !== "$schema"))

/** The tool the model must call, its input schema generated from {@link Extraction}. */
export const tool: LlmClient.Tool = {
  name: "record_extraction",
  description: "Record the title, summary, keywords, category and sentiment of the document",
  inputSchema: { ...withoutDialect(JSONSchema.make(Extraction)), type: "object" }
}

/** Output tokens reserved per call: the tool's answer is far shorter. */
export const maxOutputTokens = 600

/** The extraction request for a document. */
export const request = (model: string, document: Document, job: string): LlmClient.Request => ({
  model,
  system: "You extract structured data from documents. Call record_extraction exactly once.",
  messages: [{ role: "user", content: document.text }],
  tools: [tool],
  toolChoice: { type: "tool", name: tool.name },
  maxOutputTokens,
  metadata: { priority: "batch", documentId: document.id, job }
})

/** The model's answer was not a valid extraction. */
export class InvalidAnswer
  extends Data.TaggedError("InvalidAnswer")<{ readonly documentId: string; readonly detail: string }>
{
  override get message(): string {
    return `the model's answer does not match the extraction schema: ${this.detail}`
  }
}

/** The extraction in a response, decoded; an `InvalidAnswer` naming what was wrong otherwise. */
export const decode = (documentId: string, response: LlmClient.Response): Either.Either<Extraction, InvalidAnswer> => {
  const call = response.content.find((block): block is LlmClient.ToolUseBlock =>
    block.type === "tool_use" && block.name === tool.name
  )
  if (call === undefined) {
    return Either.left(
      new InvalidAnswer({
        documentId,
        detail: `no ${tool.name} call in the answer (stop reason ${response.stopReason})`
      })
    )
  }
  return Either.mapLeft(
    Schema.decodeUnknownEither(Extraction, { errors: "all" })(call.input),
    (error) =>
      new InvalidAnswer({
        documentId,
        detail: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) =>
          `${issue.path.join(".") || "answer"}: ${issue.message}`
        ).join("; ")
      })
  )
}
