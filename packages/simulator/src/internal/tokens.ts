/**
 * The simulator's token count: its own rule, deliberately not tiktoken's, so
 * that no client's estimate is exact by accident. A request body of either
 * shape (Anthropic Messages or OpenAI chat) is counted; a body that offers
 * tools also pays Anthropic's hidden tool-use system prompt, as the real API
 * counts and rate-limits it.
 */
import * as ToolOverhead from "@sluice/core/ToolOverhead"

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
        : Array.isArray(record.content)
        ? record.content.map(blockText).join("\n")
        : ""
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
      const content = typeof message === "object" && message !== null
        ? (message as Record<string, unknown>).content
        : undefined
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
