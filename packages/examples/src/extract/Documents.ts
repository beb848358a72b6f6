/**
 * Where the extraction job's documents come from, as streams (never loaded
 * whole): synthetic documents of heavy-tailed length, a folder of `.txt` /
 * `.md` files, or a `.jsonl` file of `{ "id": …, "text": … }` lines.
 *
 * A document that cannot be read as text is still a document: it carries a
 * `problem`, and the job records it in `failures` instead of dropping it.
 */
import { FileSystem } from "@effect/platform"
import { Data, Effect, Option, Random, Schema, Stream } from "effect"
import * as Path from "node:path"

/** One document of the job. */
export interface Document {
  readonly id: string
  readonly text: string
  /** Why this document cannot be sent, found while reading it. */
  readonly problem?: string | undefined
}

/** A source of documents: how many there are, and the documents. */
export interface Source {
  readonly description: string
  readonly count: number
  readonly documents: Stream.Stream<Document, InputError>
}

/** The input could not be read at all (missing path, unreadable folder). */
export class InputError extends Data.TaggedError("InputError")<{ readonly path: string; readonly reason: string }> {
  override get message(): string {
    return `Cannot read --input ${this.path}: ${this.reason}`
  }
}

// ---------------------------------------------------------------------------
// Synthetic documents
// ---------------------------------------------------------------------------

const topics = {
  finance:
    "revenue quarter earnings margin dividend investors shares bank loan credit interest inflation market portfolio bond audit",
  technology:
    "software cloud platform network latency database deployment engineers security model compute chip release api developers",
  health:
    "patients trial clinical hospital treatment dosage vaccine outcomes physicians diagnosis therapy nurses study symptoms care",
  energy:
    "solar wind grid turbine battery storage power utility emissions oil gas pipeline capacity megawatts refinery",
  other:
    "community festival travel weather museum sports league season garden recipe library volunteers school transport tourism"
} as const
const common = "the a of and to in for with on by from that this was were will has have new report team year plan"
  .split(" ")
const tone = {
  positive: "strong growth excellent record improved success gains beat upbeat confident".split(" "),
  negative: "decline losses weak shortfall risk delays cuts downturn concerns missed".split(" "),
  neutral: "steady unchanged flat expected stable routine ongoing scheduled typical moderate".split(" ")
} as const
const topicNames = Object.keys(topics) as ReadonlyArray<keyof typeof topics>
const toneNames = Object.keys(tone) as ReadonlyArray<keyof typeof tone>

/** Tokens of a synthetic document: Pareto (α 1.5) from 200, capped at 40,000: median ~320, mean ~600, a few in the tens of thousands. */
export const syntheticTokens = (u: number): number => Math.min(40_000, Math.round(200 / Math.pow(1 - u, 1 / 1.5)))

/** Synthetic document `index` of a seed: the same text every time, so a resumed run sends the same documents. */
export const synthetic = (index: number, seed: number): Effect.Effect<Document> =>
  Effect.gen(function*() {
    const tokens = syntheticTokens(yield* Random.next)
    const topic = topicNames[yield* Random.nextIntBetween(0, topicNames.length)]!
    const mood = toneNames[yield* Random.nextIntBetween(0, toneNames.length)]!
    const topical = topics[topic].split(" ")
    const moody = tone[mood]
    // About 1.8 simulator tokens per word of this vocabulary.
    const words = Math.max(20, Math.round(tokens / 1.8))
    const sentences: Array<string> = []
    let sentence: Array<string> = []
    for (let i = 0; i < words; i++) {
      const r = yield* Random.next
      const pool = r < 0.45 ? common : r < 0.9 ? topical : moody
      sentence.push(pool[yield* Random.nextIntBetween(0, pool.length)]!)
      if (sentence.length >= 12 && (yield* Random.next) < 0.2) {
        sentences.push(sentence[0]![0]!.toUpperCase() + sentence.join(" ").slice(1) + ".")
        sentence = []
      }
    }
    if (sentence.length > 0) sentences.push(sentence[0]![0]!.toUpperCase() + sentence.join(" ").slice(1) + ".")
    const title = `${topic[0]!.toUpperCase()}${topic.slice(1)} report ${index}: ${topical[index % topical.length]} ${
      moody[index % moody.length]
    }`
    return { id: `doc-${String(index).padStart(5, "0")}`, text: `${title}\n\n${sentences.join(" ")}` }
  }).pipe(Effect.withRandom(Random.make(`${seed}:${index}`)))

/** `count` synthetic documents, generated one at a time. */
export const syntheticSource = (count: number, seed: number): Source => ({
  description: `${count.toLocaleString("en-US")} synthetic documents (seed ${seed})`,
  count,
  documents: Stream.mapEffect(Stream.range(0, count - 1), (i) => synthetic(i, seed))
})

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/** Why a text cannot be sent, if it cannot. */
export const problemOf = (text: string): string | undefined => {
  if (text.trim().length === 0) return "empty document: nothing to extract from"
  let control = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code === 0) return "not text: it contains NUL bytes (a binary file?)"
    if (code === 0xfffd || (code < 32 && code !== 9 && code !== 10 && code !== 13)) control++
  }
  return control > text.length * 0.05
    ? `not text: ${control} of ${text.length} characters are control characters or invalid UTF-8`
    : undefined
}

const withProblem = (doc: { readonly id: string; readonly text: string }): Document => {
  const problem = problemOf(doc.text)
  return problem === undefined ? doc : { ...doc, problem }
}

/** A folder of `.txt` and `.md` files; the id is the file name. */
export const folderSource = (path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const names = yield* fs.readDirectory(path).pipe(
      Effect.mapError((error) => new InputError({ path, reason: error.message }))
    )
    const files = names.filter((name) => /\.(txt|md)$/i.test(name)).sort()
    if (files.length === 0) return yield* new InputError({ path, reason: "the folder holds no .txt or .md files" })
    return {
      description: `${files.length.toLocaleString("en-US")} files from ${path}`,
      count: files.length,
      documents: Stream.mapEffect(Stream.fromIterable(files), (name) =>
        fs.readFile(Path.join(path, name)).pipe(
          Effect.map((bytes) => withProblem({ id: name, text: new TextDecoder("utf-8").decode(bytes) })),
          Effect.catchAll((error) =>
            Effect.succeed<Document>({ id: name, text: "", problem: `unreadable: ${error.message}` })
          )
        ))
    } satisfies Source
  })

const Line = Schema.parseJson(Schema.Struct({ id: Schema.Union(Schema.String, Schema.Number), text: Schema.String }))
const decodeLine = Schema.decodeUnknownOption(Line)

/** One line of a `.jsonl` file as a document; a line that is not `{id, text}` becomes a document with a problem, named by its line number. */
export const lineDocument = (line: string, number: number): Document =>
  Option.match(decodeLine(line), {
    onNone: () => ({
      id: `line-${number}`,
      text: "",
      problem: `line ${number} is not a JSON object with a string "text" and an "id"`
    }),
    onSome: ({ id, text }) => withProblem({ id: String(id), text })
  })

/** A `.jsonl` file of `{id, text}`, one per line; blank lines are skipped. */
export const jsonlSource = (path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const lines = fs.stream(path).pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.zipWithIndex,
      Stream.filter(([line]) => line.trim() !== ""),
      Stream.mapError((error) => new InputError({ path, reason: error.message }))
    )
    const count = yield* Stream.runCount(lines)
    return {
      description: `${count.toLocaleString("en-US")} documents from ${path}`,
      count,
      documents: Stream.map(lines, ([line, index]) => lineDocument(line, index + 1))
    } satisfies Source
  })

/** The source `--input` names: a folder or a `.jsonl` file. */
export const inputSource = (path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const info = yield* fs.stat(path).pipe(
      Effect.mapError(() => new InputError({ path, reason: "no such file or folder" }))
    )
    if (info.type === "Directory") return yield* folderSource(path)
    if (/\.jsonl$/i.test(path)) return yield* jsonlSource(path)
    return yield* new InputError({ path, reason: "expected a folder of .txt/.md files or a .jsonl file" })
  })
