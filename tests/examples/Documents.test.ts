import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import * as Documents from "@sluice/examples/extract/Documents"
import * as Extraction from "@sluice/examples/extract/Extraction"
import { Simulator } from "@sluice/simulator"
import { Chunk, Effect, Either, Stream } from "effect"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"

const dir = mkdtempSync(join(tmpdir(), "sluice-docs-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("extraction documents", () => {
  it("synthetic sizes are heavy-tailed: from 200 tokens to tens of thousands, most of them short", () => {
    const sizes = Array.from({ length: 5_000 }, (_, i) => Documents.syntheticTokens((i + 0.5) / 5_000)).sort((a, b) =>
      a - b
    )
    expect(sizes[0]).toBeGreaterThanOrEqual(200)
    expect(sizes[2_500]).toBeLessThan(400)
    expect(sizes[4_999]).toBeGreaterThanOrEqual(20_000)
    expect(sizes[4_999]).toBeLessThanOrEqual(40_000)
  })

  it.effect("a synthetic document is the same every time (a resumed run sends the same text), and its length follows its size", () =>
    Effect.gen(function*() {
      const a = yield* Documents.synthetic(17, 2026)
      const b = yield* Documents.synthetic(17, 2026)
      const other = yield* Documents.synthetic(17, 7)
      expect(a).toEqual(b)
      expect(a.text).not.toEqual(other.text)
      expect(a.id).toBe("doc-00017")
      const docs = Chunk.toReadonlyArray(yield* Stream.runCollect(Documents.syntheticSource(300, 1).documents))
      expect(docs.length).toBe(300)
      const tokens = docs.map((doc) => Simulator.countTokens({ messages: [{ role: "user", content: doc.text }] })).sort(
        (x, y) => x - y
      )
      // The simulator's count of the median document is near the median size drawn (≈ 320 tokens).
      expect(tokens[150]).toBeGreaterThan(220)
      expect(tokens[150]).toBeLessThan(480)
    }))

  it("a text that cannot be sent says why", () => {
    expect(Documents.problemOf("   \n")).toMatch(/empty/)
    expect(Documents.problemOf("abc\u0000def")).toMatch(/NUL/)
    expect(Documents.problemOf("\u0001\u0002\u0003\u0004 binary")).toMatch(/control characters/)
    expect(Documents.problemOf("An ordinary report.")).toBeUndefined()
  })

  it("a .jsonl line that is not {id, text} becomes a document named by its line, with the problem", () => {
    expect(Documents.lineDocument(`{"id": 7, "text": "hello there"}`, 1)).toEqual({ id: "7", text: "hello there" })
    expect(Documents.lineDocument(`{"id": "x", "text": ""}`, 2).problem).toMatch(/empty/)
    const broken = Documents.lineDocument(`{"id": "y", "body": "no text"}`, 3)
    expect(broken.id).toBe("line-3")
    expect(broken.problem).toMatch(/line 3 is not a JSON object/)
    expect(Documents.lineDocument("not json", 4).problem).toMatch(/line 4/)
  })

  it.effect("--input reads a folder's .txt and .md files and a .jsonl file as streams, and names a missing path", () =>
    Effect.gen(function*() {
      const folder = join(dir, "folder")
      mkdirSync(folder)
      writeFileSync(join(folder, "a.txt"), "First document.")
      writeFileSync(join(folder, "b.md"), "# Second\n\nMarkdown.")
      writeFileSync(join(folder, "c.bin"), "ignored")
      const fromFolder = yield* Documents.inputSource(folder)
      expect(fromFolder.count).toBe(2)
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(fromFolder.documents)).map((d) => d.id)).toEqual([
        "a.txt",
        "b.md"
      ])

      const jsonl = join(dir, "docs.jsonl")
      writeFileSync(jsonl, `{"id":"one","text":"Hello."}\n\n{"id":"two","text":"World."}\nbroken\n`)
      const fromJsonl = yield* Documents.inputSource(jsonl)
      expect(fromJsonl.count).toBe(3)
      const docs = Chunk.toReadonlyArray(yield* Stream.runCollect(fromJsonl.documents))
      expect(docs.map((d) => d.id)).toEqual(["one", "two", "line-4"])

      const missing = yield* Effect.flip(Documents.inputSource(join(dir, "nope")))
      expect(missing.message).toContain("Cannot read --input")
      expect(missing.message).toContain("no such file or folder")
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("extraction schema", () => {
  const response = (input: unknown) => ({
    id: "m",
    model: "claude-haiku-4-5",
    content: [{ type: "tool_use" as const, id: "t", name: Extraction.tool.name, input }],
    stopReason: "tool_use" as const,
    usage: { inputTokens: 10, outputTokens: 5, cacheReadInputTokens: 0, cacheWriteInputTokens: 0 },
    rateLimits: {}
  })
  const good = { title: "T", summary: "S.", keywords: ["a"], category: "energy", sentiment: "neutral" }

  it("the tool's input schema is generated from the Schema", () => {
    const schema = Extraction.tool.inputSchema as unknown as {
      properties: Record<string, { enum?: ReadonlyArray<string> }>
      required: ReadonlyArray<string>
    }
    expect(schema.properties.category?.enum).toEqual([...Extraction.categories])
    expect([...schema.required].sort()).toEqual(["category", "keywords", "sentiment", "summary", "title"])
  })

  it("a valid answer decodes; an invalid one names each wrong field", () => {
    expect(Either.getOrThrow(Extraction.decode("d1", response(good) as never)).category).toBe("energy")
    const bad = Extraction.decode("d1", response({ ...good, category: "sports", keywords: [] }) as never)
    expect(Either.isLeft(bad)).toBe(true)
    if (Either.isLeft(bad)) {
      expect(bad.left.message).toContain("category")
      expect(bad.left.message).toContain("keywords")
    }
    const none = Extraction.decode("d1", { ...response(good), content: [{ type: "text", text: "no" }] } as never)
    expect(Either.isLeft(none) && none.left.message).toContain("no record_extraction call")
  })
})
