/**
 * What counting a document costs, and what each way of counting gets wrong:
 * tiktoken on the whole text (the estimator before issue 16), tiktoken on a
 * sample of a long text (`TokenEstimator.sampled`, the default now), and a
 * bare length ratio (a token per four characters, calibrated like the others
 * against the provider's counts).
 *
 *   npx tsx --conditions=@sluice/source bench/estimator-cost.ts
 *
 * Documents: the extraction job's own synthetic documents (`extract/Documents.ts`),
 * joined to log-uniform sizes from 200 to 40,000 simulator tokens and sent as
 * the job's request (one tool, forced). A second corpus mixes kinds of text
 * in one stream: the job's prose, JSON records of numbers, TypeScript (Effect's
 * own sources) and CJK prose.
 *
 * Two providers: the simulator (what the job runs against; its count is a
 * length rule with a surcharge for digits and punctuation, so a length ratio
 * fits it better than it would fit a real tokenizer), and tiktoken's whole
 * count as a stand-in for a real BPE tokenizer (Claude's is not public).
 *
 * Every estimator has the default 5 % margin and learns from every call;
 * error is estimate / actual − 1 after the first 20 calls; "under" is the calls
 * reserved below the provider's count (beyond the margin, since it is included).
 */
import { NodeRuntime } from "@effect/platform-node"
import { type LlmClient, TokenEstimator } from "@sluice/core"
import { synthetic } from "@sluice/examples/extract/Documents"
import { request as extractionRequest } from "@sluice/examples/extract/Extraction"
import { Simulator } from "@sluice/simulator"
import { Console, Effect, Random } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const model = "claude-haiku-4-5"
const job = "estimator-cost"
const root = join(import.meta.dirname, "..")

/** The simulator's whole input count of a request: the hidden tool-use prompt included. */
const simulatorCount = (r: LlmClient.Request) =>
  Simulator.countTokens({
    model: r.model,
    system: r.system,
    messages: r.messages,
    tools: r.tools?.map((tool) => ({ name: tool.name, input_schema: tool.inputSchema })),
    ...(r.toolChoice === undefined ? {} : { tool_choice: r.toolChoice })
  })

type Kind = "prose" | "json" | "code" | "cjk"

/** Synthetic job documents joined until the simulator counts `tokens`, from document `from` on. */
const prose = (tokens: number, from: number) =>
  Effect.gen(function*() {
    const parts: Array<string> = []
    let index = from
    while (Simulator.countTokens({ messages: [{ content: parts.join("\n\n") }] }) < tokens) {
      parts.push((yield* synthetic(index++, 2026)).text)
    }
    return { text: parts.join("\n\n"), next: index }
  })

/** Text of kind `kind` of about `chars` characters. */
const textOf = (kind: Exclude<Kind, "prose">, chars: number, sources: string) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    let length = 0
    while (length < chars) {
      let piece: string
      switch (kind) {
        case "json":
          piece = JSON.stringify({
            id: yield* Random.nextIntBetween(1, 9_999_999),
            amount: (yield* Random.nextRange(0, 1e6)).toFixed(2),
            rate: (yield* Random.next).toFixed(4),
            region: ["emea", "apac", "amer"][yield* Random.nextIntBetween(0, 3)],
            at: `2026-${String(yield* Random.nextIntBetween(1, 13)).padStart(2, "0")}-${
              String(yield* Random.nextIntBetween(1, 29)).padStart(2, "0")
            }`
          })
          break
        case "code": {
          const start = yield* Random.nextIntBetween(0, sources.length - 2_000)
          piece = sources.slice(start, start + 2_000)
          break
        }
        case "cjk": {
          const sentence: Array<string> = []
          const n = yield* Random.nextIntBetween(8, 30)
          for (let i = 0; i < n; i++) sentence.push(cjk[yield* Random.nextIntBetween(0, cjk.length)]!)
          piece = `${sentence.join("")}${(yield* Random.next) < 0.7 ? "，" : "。"}`
          break
        }
      }
      out.push(piece)
      length += piece.length + 1
    }
    return out.join("\n")
  })

const cjk = Array.from(
  "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研",
  (c) => c
)

/** Effect's TypeScript sources (the version the lockfile pins, so the corpus does not move), joined: real code to sample from. */
const effectSources = (): string => {
  const dir = join(root, "node_modules", "effect", "src")
  return readdirSync(dir).filter((name) => name.endsWith(".ts")).sort().map((name) =>
    readFileSync(join(dir, name), "utf8")
  ).join("\n")
}

const quantile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

const percent = (value: number) => `${(100 * value) >= 0 ? "+" : ""}${(100 * value).toFixed(1)} %`

const summary = (values: ReadonlyArray<number>) => {
  if (values.length === 0) return "no samples"
  const sorted = [...values].sort((a, b) => a - b)
  const under = values.filter((v) => v < 0).length
  return `${percent(quantile(sorted, 0.5))} (min ${percent(sorted[0]!)}, p5 ${percent(quantile(sorted, 0.05))}, p95 ${
    percent(quantile(sorted, 0.95))
  }), ${under}/${values.length} under`
}

const methods = ["whole tiktoken", "sampled tiktoken", "length ratio"] as const
type Method = typeof methods[number]

interface Call {
  readonly kind: Kind
  readonly request: LlmClient.Request
  readonly text: string
}

const program = Effect.gen(function*() {
  const exact = yield* TokenEstimator.encoder()
  const encoders: Record<Method, TokenEstimator.Encoder> = {
    "whole tiktoken": exact,
    "sampled tiktoken": TokenEstimator.sampled(exact),
    "length ratio": (text) => Math.ceil(text.length / 4)
  }
  const sources = effectSources()

  // The job's documents, log-uniform from 200 to 40,000 simulator tokens.
  const jobCalls: Array<Call> = []
  let next = 0
  for (let i = 0; i < 240; i++) {
    const tokens = Math.round(200 * Math.pow(200, yield* Random.next))
    const made = yield* prose(tokens, next)
    next = made.next
    jobCalls.push({
      kind: "prose",
      text: made.text,
      request: extractionRequest(model, { id: `d${i}`, text: made.text }, job)
    })
  }

  // CPU: each method on each job document, the median of 5 timed counts after a warm one.
  const buckets = [[200, 1_000], [1_000, 4_000], [4_000, 10_000], [10_000, 40_001]] as const
  const cpu = new Map<string, Array<number>>()
  for (const call of jobCalls) {
    const tokens = Simulator.countTokens({ messages: [{ content: call.text }] })
    const bucket = buckets.findIndex(([low, high]) => tokens >= low && tokens < high)
    for (const method of methods) {
      const encode = encoders[method]
      encode(call.text)
      const times: Array<number> = []
      for (let k = 0; k < 5; k++) {
        const started = performance.now()
        encode(call.text)
        times.push(performance.now() - started)
      }
      times.sort((a, b) => a - b)
      const id = `${bucket}\u0000${method}`
      cpu.set(id, [...(cpu.get(id) ?? []), times[2]!])
    }
  }
  yield* Console.log(`CPU per document (median over the documents of the median of 5 counts; ms), the job's documents:`)
  yield* Console.log(`| simulator tokens | documents | ${methods.join(" | ")} |`)
  yield* Console.log(`|---|---|${methods.map(() => "---").join("|")}|`)
  for (const [b, [low, high]] of buckets.entries()) {
    const row = methods.map((method) => {
      const values = [...(cpu.get(`${b}\u0000${method}`) ?? [])].sort((x, y) => x - y)
      return values.length === 0 ? "–" : `${quantile(values, 0.5).toFixed(3)} (max ${values.at(-1)!.toFixed(3)})`
    })
    const n = cpu.get(`${b}\u0000whole tiktoken`)?.length ?? 0
    yield* Console.log(
      `| ${low.toLocaleString("en-US")}–${(high - 1).toLocaleString("en-US")} | ${n} | ${row.join(" | ")} |`
    )
  }

  // The mixed corpus: the job's prose and three other kinds, 1,000 to 60,000 characters, in one stream.
  const mixedCalls: Array<Call> = []
  const kinds: ReadonlyArray<Kind> = ["prose", "json", "code", "cjk"]
  for (let i = 0; i < 240; i++) {
    const kind = kinds[yield* Random.nextIntBetween(0, kinds.length)]!
    const chars = Math.round(1_000 * Math.pow(60, yield* Random.next))
    const text = kind === "prose"
      ? (yield* prose(Math.round(chars / 4.5), next)).text
      : yield* textOf(kind, chars, sources)
    if (kind === "prose") next += 40
    mixedCalls.push({ kind, text, request: extractionRequest(model, { id: `m${i}`, text }, job) })
  }

  const warmUp = 20
  const accuracy = (label: string, calls: ReadonlyArray<Call>, actualOf: (call: Call) => number) =>
    Effect.gen(function*() {
      yield* Console.log(`\n${label}: estimate / actual − 1, 5 % margin included, after ${warmUp} calls`)
      const errors = new Map<string, Array<number>>()
      for (const method of methods) {
        const estimator = TokenEstimator.makeWith(encoders[method])
        for (const [index, call] of calls.entries()) {
          const estimate = yield* estimator.estimate(call.request)
          const actual = actualOf(call)
          if (index >= warmUp) {
            for (const id of [`all\u0000${method}`, `${call.kind}\u0000${method}`]) {
              errors.set(id, [...(errors.get(id) ?? []), estimate.inputTokens / actual - 1])
            }
          }
          yield* estimator.observe(estimate, {
            inputTokens: actual,
            outputTokens: 0,
            cacheReadInputTokens: 0,
            cacheWriteInputTokens: 0
          })
        }
      }
      const present = ["all", ...kinds].filter((kind) => errors.has(`${kind}\u0000whole tiktoken`))
      for (const kind of present) {
        for (const method of methods) {
          yield* Console.log(
            `  ${kind.padEnd(6)} ${method.padEnd(17)} ${summary(errors.get(`${kind}\u0000${method}`)!)}`
          )
        }
      }
    })

  // tiktoken as the provider: the whole count of the request plus the 313-token forced-tool prompt.
  const tiktokenProvider = (call: Call) => TokenEstimator.countRequest(exact, call.request) + 313
  yield* accuracy(
    "The job's documents, the simulator as the provider",
    jobCalls,
    (call) => simulatorCount(call.request)
  )
  yield* accuracy("The job's documents, tiktoken as the provider", jobCalls, tiktokenProvider)
  yield* accuracy(
    "Mixed kinds of text, the simulator as the provider",
    mixedCalls,
    (call) => simulatorCount(call.request)
  )
  yield* accuracy("Mixed kinds of text, tiktoken as the provider", mixedCalls, tiktokenProvider)
})

program.pipe(Effect.withRandom(Random.make(16)), NodeRuntime.runMain)
