/**
 * What the simulated model "writes": deterministic from the request's content,
 * so a test or benchmark sees the same answer for the same prompt. A request
 * with tools gets a tool call whose input fills the tool's JSON schema from the
 * last user message (title, summary, keywords, category, sentiment, …); any
 * other gets a text of the prompt's words, 30 % to 100 % of `max_tokens` long.
 */
import { hash } from "./hash.js"
import { contentText, countText } from "./tokens.js"

const stopwords = new Set(
  "a an and are as at be but by for from has have he her his i in into is it its of on or our she that the their them they this to was we were will with you your not no so if than then there these those which who what when where how all any can could would should may might also more most very just about over under after before between"
    .split(" ")
)
const positiveWords = new Set(
  "good great excellent strong growth grew gain gains delighted happy success successful improved improve wonderful positive record best win wins benefit love"
    .split(" ")
)
const negativeWords = new Set(
  "bad poor weak loss losses decline declined fell fail failed failure risk problem problems negative worst crisis concern concerns angry sad lawsuit"
    .split(" ")
)

const wordsOf = (text: string): ReadonlyArray<string> => text.toLowerCase().match(/[a-z][a-z'-]+/g) ?? []

const keywordsOf = (text: string, count: number): ReadonlyArray<string> => {
  const frequency = new Map<string, number>()
  for (const word of wordsOf(text)) {
    if (word.length < 4 || stopwords.has(word)) continue
    frequency.set(word, (frequency.get(word) ?? 0) + 1)
  }
  return [...frequency.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, count).map(([word]) =>
    word
  )
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
  const named = values.find((value) =>
    typeof value === "string" && value.length > 2 && lower.includes(value.toLowerCase())
  )
  if (named !== undefined) return named
  for (const keyword of keywordsOf(text, 10)) {
    const related = values.find((value) =>
      typeof value === "string" && value.toLowerCase().startsWith(keyword.slice(0, 4))
    )
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
      const properties =
        (typeof node.properties === "object" && node.properties !== null ? node.properties : {}) as Record<
          string,
          unknown
        >
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
      if (/sentiment/i.test(name)) {
        return sentimentScore(text) > 0
          ? "positive"
          : sentimentScore(text) < 0
          ? "negative"
          : "neutral"
      }
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

/** A request as the simulator reads it: the Messages API's body (the OpenAI endpoint converts to it). */
export interface MessagesBody {
  readonly model: string
  readonly max_tokens: number
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: unknown }>
  readonly system?: unknown
  readonly tools?: ReadonlyArray<
    { readonly name: string; readonly input_schema?: unknown; readonly parameters?: unknown }
  >
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
  const schema = tool.input_schema ?? (tool as { function?: { parameters?: unknown } }).function?.parameters ??
    tool.parameters
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
    return {
      kind: "tool" as const,
      tool: tool.name,
      input,
      outputTokens: Math.min(outputTokens, body.max_tokens),
      stop
    }
  }
  const text = textAnswer(prompt, answerLength(prompt, body.max_tokens))
  return { kind: "text" as const, text, outputTokens: Math.min(body.max_tokens, countText(text)), stop: "end_turn" }
}
