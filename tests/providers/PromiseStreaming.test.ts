import type Anthropic from "@anthropic-ai/sdk"
import AnthropicSdk from "@anthropic-ai/sdk"
import {
  BudgetExceededError,
  ClosedError,
  createClient,
  InvalidOptionsError,
  toBudgetLimit
} from "@sluice/providers/Promise"
import * as SluiceOpenAi from "@sluice/providers/PromiseOpenAi"
import * as Simulator from "@sluice/simulator/Simulator"
import { Effect, Exit, Scope } from "effect"
import type OpenAI from "openai"
import OpenAiSdk from "openai"
import { describe, expect, it } from "vitest"

const claude = "claude-haiku-4-5"
const gpt = "gpt-4o-mini"

/** Runs `f` against a fresh simulator over HTTP, stopped afterwards. */
const withSimulator = async <A>(f: (running: Simulator.Running) => Promise<A>): Promise<A> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const running = await Effect.runPromise(Scope.extend(Simulator.serve({}), scope))
    return await f(running)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** Calls the simulator accepted for a model. */
const accepted = async (running: Simulator.Running, model: string) =>
  (await Effect.runPromise(running.stats)).keys.find((entry) => entry.model === model)?.accepted ?? 0

const prices = {
  [claude]: { inputPerMTok: 1, outputPerMTok: 5, cacheReadPerMTok: 0.1, cacheWritePerMTok: 1.25 },
  [gpt]: { inputPerMTok: 0.15, outputPerMTok: 0.6, cacheReadPerMTok: 0.075, cacheWritePerMTok: 0.15 }
}

const ask = (text: string): Anthropic.MessageCreateParamsNonStreaming => ({
  model: claude,
  max_tokens: 300,
  system: "You are terse.",
  messages: [{ role: "user", content: text }]
})

const chat = (text: string): OpenAI.ChatCompletionCreateParamsNonStreaming => ({
  model: gpt,
  max_tokens: 300,
  messages: [{ role: "system", content: "You are terse." }, { role: "user", content: text }]
})

/** Nothing held: no call in flight at the limiter, no dollar reserved at the budget. */
const expectSettled = async (
  client: {
    stats: (model: string) => Promise<{ inFlight: number }>
    budget: () => Promise<ReadonlyArray<{ reservedUsd: number; spentUsd: number }>>
  },
  model: string
) => {
  expect((await client.stats(model)).inFlight).toBe(0)
  for (const status of await client.budget()) expect(status.reservedUsd).toBe(0)
}

describe("the Anthropic facade streams through the Governor", () => {
  it("messages.stream is the SDK's MessageStream: text events, finalMessage, usage settled at the end", () =>
    withSimulator(async (running) => {
      const plain = new AnthropicSdk({ apiKey: "sim-key", baseURL: running.url, maxRetries: 0 })
      const anthropic = createClient({
        apiKey: "sim-key",
        baseURL: running.url,
        tenant: "acme",
        budget: { limits: [{ scope: { tenant: "acme" }, window: "day", limitUsd: 10 }], prices }
      })
      try {
        const stream = anthropic.messages.stream(ask("Tell me about token buckets."))
        const texts: Array<string> = []
        stream.on("text", (text) => texts.push(text))
        const events: Array<Anthropic.MessageStreamEvent> = []
        for await (const event of stream) events.push(event)
        const message: Anthropic.Message = await stream.finalMessage()
        // The plain SDK's answer to the same params: the simulator answers deterministically.
        const expected = await plain.messages.create(ask("Tell me about token buckets."))
        expect(events[0]?.type).toBe("message_start")
        expect(events.at(-1)?.type).toBe("message_stop")
        expect(texts.length).toBeGreaterThan(1)
        expect(texts.join("")).toBe(await stream.finalText())
        expect(message.content).toEqual(expected.content)
        expect(message.usage.output_tokens).toBe(expected.usage.output_tokens)
        await expectSettled(anthropic, claude)
        // Settled to the real usage of the final events: input at $1, output at $5 per million.
        const [acme] = await anthropic.budget()
        expect(acme?.scope).toContain("acme")
        expect(acme?.spentUsd).toBeCloseTo(
          (message.usage.input_tokens * 1 + message.usage.output_tokens * 5) / 1_000_000,
          8
        )
        expect(await accepted(running, claude)).toBe(2)
      } finally {
        await anthropic.close()
      }
    }))

  it("create({ stream: true }) resolves to an async iterable of the SDK's raw events", () =>
    withSimulator(async (running) => {
      const anthropic = createClient({
        apiKey: "sim-key",
        baseURL: running.url,
        budget: { limits: [{ window: "day", limitUsd: 10 }], prices }
      })
      try {
        const stream = await anthropic.messages.create({ ...ask("What is a leaky bucket?"), stream: true })
        const events: Array<Anthropic.RawMessageStreamEvent> = []
        for await (const event of stream) events.push(event)
        expect(events.map((event) => event.type)).toContain("content_block_delta")
        const text = events.flatMap((event) =>
          event.type === "content_block_delta" && event.delta.type === "text_delta" ? [event.delta.text] : []
        ).join("")
        expect(text.length).toBeGreaterThan(0)
        const delta = events.find((event): event is Anthropic.RawMessageDeltaEvent => event.type === "message_delta")
        expect(delta?.usage.output_tokens).toBeGreaterThan(0)
        await expectSettled(anthropic, claude)
        expect((await anthropic.budget())[0]?.spentUsd).toBeGreaterThan(0)
      } finally {
        await anthropic.close()
      }
    }))

  it("a budget refusal is a BudgetExceededError before any request reaches the simulator, both ways of streaming", () =>
    withSimulator(async (running) => {
      const anthropic = createClient({
        apiKey: "sim-key",
        baseURL: running.url,
        budget: { limits: [{ scope: { tenant: "acme" }, window: "day", limitUsd: 0.0001 }], prices }
      })
      try {
        const refused = await anthropic.messages.create({ ...ask("Spend my money."), stream: true }, { tenant: "acme" })
          .catch((error: unknown) => error)
        expect(refused).toBeInstanceOf(BudgetExceededError)
        const stream = anthropic.messages.stream(ask("Spend my money."), { tenant: "acme" })
        const final = await stream.finalMessage().catch((error: unknown) => error)
        expect(final).toBeInstanceOf(BudgetExceededError)
        if (final instanceof BudgetExceededError) expect(final.reason.limitUsd).toBe(0.0001)
        expect(await accepted(running, claude)).toBe(0)
        await expectSettled(anthropic, claude)
        // Another tenant is not under acme's limit.
        const other = await anthropic.messages.create({ ...ask("Hello."), stream: true }, { tenant: "globex" })
        for await (const _ of other) { /* drain */ }
        expect(await accepted(running, claude)).toBe(1)
      } finally {
        await anthropic.close()
      }
    }))

  it("breaking out of the loop, or aborting, releases the call exactly once; the worst case is charged", () =>
    withSimulator(async (running) => {
      const anthropic = createClient({
        apiKey: "sim-key",
        baseURL: running.url,
        maxConcurrency: 1,
        budget: { limits: [{ window: "day", limitUsd: 10 }], prices }
      })
      try {
        const stream = await anthropic.messages.create({ ...ask("Tell me a long story."), stream: true })
        for await (const event of stream) {
          expect(event.type).toBe("message_start")
          break
        }
        await expectSettled(anthropic, claude)
        const [afterBreak] = await anthropic.budget()
        // No answer came back: the call may have run, so its worst case (all of max_tokens) is spent.
        expect(afterBreak?.spentUsd).toBeGreaterThanOrEqual(300 * 5 / 1_000_000)

        // As with the SDK's own stream, an abort ends the iteration with its APIUserAbortError.
        const messageStream = anthropic.messages.stream(ask("Another long story."))
        let seen = 0
        const stopped = await (async () => {
          for await (const _ of messageStream) {
            seen += 1
            messageStream.abort()
          }
        })().catch((error: unknown) => error)
        expect(stopped).toBeInstanceOf(AnthropicSdk.APIUserAbortError)
        // The SDK hands on what it had read ahead before the abort.
        expect(seen).toBeGreaterThanOrEqual(1)
        expect(messageStream.aborted).toBe(true)
        await expectSettled(anthropic, claude)

        const controller = new AbortController()
        const signalled = await anthropic.messages.create({ ...ask("A third one."), stream: true }, {
          signal: controller.signal
        })
        const iterator = signalled[Symbol.asyncIterator]()
        expect((await iterator.next()).done).toBe(false)
        controller.abort()
        expect((await iterator.next()).done).toBe(true)
        await expectSettled(anthropic, claude)

        // One call at a time: had any permit been held, this would wait forever.
        const message = await anthropic.messages.create(ask("Still there?"))
        expect(message.type).toBe("message")
      } finally {
        await anthropic.close()
      }
      // After close(), both ways of streaming reject with ClosedError, as a whole call does.
      await expect(anthropic.messages.create({ ...ask("Late."), stream: true })).rejects.toBeInstanceOf(ClosedError)
      await expect(anthropic.messages.stream(ask("Late.")).finalMessage()).rejects.toBeInstanceOf(ClosedError)
    }))
})

describe("plain JavaScript options", () => {
  it("budget scopes read { tenant } and { job }; a bad one, a bad tenant and a bad Azure option are each named", () => {
    expect(toBudgetLimit({ scope: { tenant: "acme" }, window: "day", limitUsd: 1 }).scope).toEqual({
      _tag: "tenant",
      id: "acme"
    })
    expect(toBudgetLimit({ scope: { job: "nightly" }, window: "day", limitUsd: 1 }).scope).toEqual({
      _tag: "job",
      id: "nightly"
    })
    expect(toBudgetLimit({ window: "day", limitUsd: 1 }).scope).toEqual({ _tag: "global" })
    const anthropic = () =>
      createClient({
        apiKey: "sim-key",
        tenant: "",
        budget: { limits: [{ scope: { tenant: "" }, window: "day", limitUsd: 1 }] }
      })
    expect(anthropic).toThrow(InvalidOptionsError)
    try {
      anthropic()
    } catch (error) {
      const paths = (error as InvalidOptionsError).reason.issues.map((issue) => issue.path)
      expect(paths).toContain("tenant")
      expect(paths.some((path) => path.startsWith("budget.limits.0.scope"))).toBe(true)
    }
    const openai = () =>
      SluiceOpenAi.createClient({ apiKey: "sim-key", auth: "basic" as "bearer", defaultMaxTokens: 0, job: "n" })
    expect(openai).toThrow(InvalidOptionsError)
    try {
      openai()
    } catch (error) {
      expect((error as InvalidOptionsError).reason.issues.map((issue) => issue.path).sort()).toEqual([
        "auth",
        "defaultMaxTokens"
      ])
    }
  })
})

describe("the OpenAI facade: chat.completions over the OpenAI-compatible layer", () => {
  it("create answers the API's ChatCompletion, as the plain SDK gets it", () =>
    withSimulator(async (running) => {
      const plain = new OpenAiSdk({ apiKey: "sim-key", baseURL: `${running.url}/v1`, maxRetries: 0 })
      const openai = SluiceOpenAi.createClient({
        apiKey: "sim-key",
        baseURL: `${running.url}/v1`,
        budget: { limits: [{ window: "day", limitUsd: 10 }], prices }
      })
      try {
        const expected = await plain.chat.completions.create(chat("Tell me about token buckets."))
        const completion: OpenAI.ChatCompletion = await openai.chat.completions.create(
          chat("Tell me about token buckets.")
        )
        expect(Object.keys(completion).sort()).toEqual(Object.keys(expected).sort())
        expect(completion.object).toBe("chat.completion")
        expect(completion.choices[0]?.message.content).toBe(expected.choices[0]?.message.content)
        expect(completion.usage?.completion_tokens).toBe(expected.usage?.completion_tokens)
        await expectSettled(openai, gpt)
        expect((await openai.budget())[0]?.spentUsd).toBeGreaterThan(0)
        expect(await accepted(running, gpt)).toBe(2)
      } finally {
        await openai.close()
      }
    }))

  it("stream: true yields the API's chunks; the usage chunk Sluice asks for settles the call and reaches only who asked", () =>
    withSimulator(async (running) => {
      const plain = new OpenAiSdk({ apiKey: "sim-key", baseURL: `${running.url}/v1`, maxRetries: 0 })
      const openai = SluiceOpenAi.createClient({
        apiKey: "sim-key",
        baseURL: `${running.url}/v1`,
        tenant: "acme",
        budget: { limits: [{ scope: { tenant: "acme" }, window: "day", limitUsd: 10 }], prices }
      })
      try {
        const expected = await plain.chat.completions.create({ ...chat("What is a leaky bucket?"), stream: true })
        const plainChunks: Array<OpenAI.ChatCompletionChunk> = []
        for await (const chunk of expected) plainChunks.push(chunk)

        const stream = await openai.chat.completions.create({ ...chat("What is a leaky bucket?"), stream: true })
        const chunks: Array<OpenAI.ChatCompletionChunk> = []
        for await (const chunk of stream) chunks.push(chunk)
        const textOf = (all: ReadonlyArray<OpenAI.ChatCompletionChunk>) =>
          all.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")
        expect(chunks.length).toBeGreaterThan(2)
        expect(chunks.every((chunk) => chunk.object === "chat.completion.chunk" && chunk.choices.length === 1)).toBe(
          true
        )
        expect(textOf(chunks)).toBe(textOf(plainChunks))
        expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe("stop")
        await expectSettled(openai, gpt)
        const spent = (await openai.budget())[0]?.spentUsd ?? 0
        expect(spent).toBeGreaterThan(0)
        // Far below the worst case (300 output tokens): settled to the usage of the last chunk.
        expect(spent).toBeLessThan(300 * 0.6 / 1_000_000)

        const withUsage = await openai.chat.completions.create({
          ...chat("What is a leaky bucket?"),
          stream: true,
          stream_options: { include_usage: true }
        })
        const all: Array<OpenAI.ChatCompletionChunk> = []
        for await (const chunk of withUsage) all.push(chunk)
        const last = all.at(-1)
        expect(last?.choices).toEqual([])
        expect(last?.usage?.completion_tokens).toBeGreaterThan(0)
      } finally {
        await openai.close()
      }
    }))

  it("a budget refusal is a BudgetExceededError before any request; a break and an abort release the call", () =>
    withSimulator(async (running) => {
      const openai = SluiceOpenAi.createClient({
        apiKey: "sim-key",
        baseURL: `${running.url}/v1`,
        maxConcurrency: 1,
        budget: {
          limits: [{ scope: { tenant: "acme" }, window: "day", limitUsd: 0.00001 }, { window: "day", limitUsd: 10 }],
          prices
        }
      })
      try {
        const refused = await openai.chat.completions.create({ ...chat("Spend."), stream: true }, { tenant: "acme" })
          .catch((error: unknown) => error)
        expect(refused).toBeInstanceOf(BudgetExceededError)
        const refusedWhole = await openai.chat.completions.create(chat("Spend."), { tenant: "acme" })
          .catch((error: unknown) => error)
        expect(refusedWhole).toBeInstanceOf(BudgetExceededError)
        expect(await accepted(running, gpt)).toBe(0)
        await expectSettled(openai, gpt)

        const stream = await openai.chat.completions.create({ ...chat("A long story."), stream: true })
        for await (const _ of stream) break
        await expectSettled(openai, gpt)

        const aborted = await openai.chat.completions.create({ ...chat("Another one."), stream: true })
        const seen: Array<OpenAI.ChatCompletionChunk> = []
        for await (const chunk of aborted) {
          seen.push(chunk)
          aborted.controller.abort()
        }
        expect(seen).toHaveLength(1)
        await expectSettled(openai, gpt)

        // One call at a time: had any permit been held, this would wait forever.
        const completion = await openai.chat.completions.create(chat("Still there?"))
        expect(completion.choices[0]?.message.content?.length).toBeGreaterThan(0)
        expect(await accepted(running, gpt)).toBe(3)
      } finally {
        await openai.close()
      }
    }))
})
