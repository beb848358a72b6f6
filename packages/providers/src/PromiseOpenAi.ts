/**
 * Sluice for code that does not use Effect, with the `openai` SDK's surface:
 * {@link createClient} returns an object shaped like `new OpenAI(...)` for
 * chat completions — `chat.completions.create(params)` takes and returns the
 * shapes of the `openai` package — whose calls pass a Governor over the
 * OpenAI-compatible layer (OpenAI, Azure OpenAI, local servers that copy the API).
 *
 * - `create(params)` sends the caller's params as they are (with the model of
 *   a fallback rung) and resolves to the API's `ChatCompletion`; with
 *   `stream: true` it resolves, once the call is admitted and answering, to an
 *   async iterable of `ChatCompletionChunk`s (and a `controller` to abort it).
 * - A streamed call asks for `stream_options: { include_usage: true }` itself:
 *   the last chunk's usage settles the limiter and the budget. That chunk (no
 *   choices) reaches the caller only when the caller asked for it.
 * - The call is reserved at its worst case before it is sent:
 *   `max_completion_tokens`, else `max_tokens`, else `defaultMaxTokens` (4,096;
 *   not sent) of output. Refusals, early `break`s and aborts release it as the
 *   Anthropic facade's do (see `@sluice/providers/Promise`), and every failure
 *   is the same `SluiceError` subclasses.
 * - Options are the Anthropic facade's (`quotas`, `budget` with plain scopes
 *   such as `{ tenant: "acme" }`, `retry`, `fallback`, `tenant`, `job`,
 *   `priority`, …), plus `auth` and `query` for Azure.
 * - Only the types of `openai` are used: the package is an optional peer, not
 *   loaded at run time.
 *
 * @example
 * ```ts
 * import { createClient } from "@sluice/providers/PromiseOpenAi"
 *
 * const main = async () => {
 *   const openai = createClient({
 *     apiKey: process.env.OPENAI_API_KEY ?? "",
 *     quotas: { "gpt-4o-mini": { requests: { limit: 500, per: "1 minute" }, tokens: { limit: 200_000, per: "1 minute" } } },
 *     budget: { limits: [{ scope: { tenant: "acme" }, window: "day", limitUsd: 5 }] }
 *   })
 *   const stream = await openai.chat.completions.create(
 *     { model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true },
 *     { tenant: "acme" }
 *   )
 *   for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? "")
 *   await openai.close()
 * }
 * ```
 *
 * @since 0.1.0
 */
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { Budget, Governor, LlmClient, RateLimiter } from "@sluice/core"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionContentPart,
  ChatCompletionCreateParamsBase,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
  ChatCompletionMessageParam,
  ChatCompletionToolChoiceOption
} from "openai/resources/chat/completions"
import * as Facade from "./internal/facade.js"
import * as OpenAiCompatible from "./OpenAiCompatible.js"
import {
  type CallOptions,
  ClientClosed,
  type ClientOptions,
  ClosedError,
  InvalidClientOptions,
  InvalidOptionsError,
  InvalidRequest,
  servicesLayer,
  toError,
  validateWith
} from "./Promise.js"

/**
 * Options of a governed OpenAI-compatible client: the Anthropic facade's,
 * with `baseURL` the API root (`https://api.openai.com/v1` by default; the
 * simulator's is `${url}/v1`), and Azure's `auth` and `query`.
 *
 * @since 0.1.0
 * @category models
 */
export interface OpenAiClientOptions extends ClientOptions {
  /** `bearer` (OpenAI, default) or `api-key` (Azure). */
  readonly auth?: "bearer" | "api-key" | undefined
  /** Extra query parameters, e.g. `{ "api-version": "2024-10-21" }` for Azure. */
  readonly query?: { readonly [name: string]: string } | undefined
  /** The output a call without `max_completion_tokens` or `max_tokens` is reserved for (not sent). Default 4,096. */
  readonly defaultMaxTokens?: number | undefined
}

const extraFields = ["auth", "query", "defaultMaxTokens"] as const

/**
 * Checks every option at once; the error names each wrong one.
 *
 * @since 0.1.0
 * @category utilities
 */
export const validate = (options: OpenAiClientOptions): Either.Either<OpenAiClientOptions, InvalidClientOptions> => {
  const issues: Array<{ readonly path: string; readonly message: string }> = []
  if (Predicate.isRecord(options)) {
    if (options.auth !== undefined && options.auth !== "bearer" && options.auth !== "api-key") {
      issues.push({ path: "auth", message: `Expected "bearer" or "api-key", got ${JSON.stringify(options.auth)}` })
    }
    if (
      options.query !== undefined &&
      !(Predicate.isRecord(options.query) && Object.values(options.query).every((value) => typeof value === "string"))
    ) {
      issues.push({ path: "query", message: "Expected an object of string values" })
    }
    if (
      options.defaultMaxTokens !== undefined &&
      !(Number.isInteger(options.defaultMaxTokens) && options.defaultMaxTokens > 0)
    ) {
      issues.push({ path: "defaultMaxTokens", message: "Expected a positive integer" })
    }
  }
  const rest = validateWith(options, extraFields)
  if (issues.length === 0) return rest
  return Either.left(
    new InvalidClientOptions({ issues: [...Either.isLeft(rest) ? rest.left.issues : [], ...issues] })
  )
}

// ---------------------------------------------------------------------------
// Chat completions params as the request Sluice estimates
// ---------------------------------------------------------------------------

const textOf = (
  content: string | ReadonlyArray<ChatCompletionContentPart | { readonly type: string }> | null | undefined
) =>
  typeof content === "string"
    ? content
    : (content ?? []).map((part) =>
      part.type === "text" && "text" in part && typeof part.text === "string" ? part.text : `[${part.type}]`
    ).join("\n")

const parseArguments = (json: string): unknown => {
  try {
    return JSON.parse(json)
  } catch {
    return json
  }
}

const messageOf = (message: ChatCompletionMessageParam): LlmClient.Message | undefined => {
  switch (message.role) {
    case "system":
    case "developer":
      return undefined
    case "user":
      return { role: "user", content: textOf(message.content) }
    case "tool":
      return {
        role: "user",
        content: [{ type: "tool_result", toolUseId: message.tool_call_id, content: textOf(message.content) }]
      }
    case "function":
      return { role: "user", content: message.content ?? "" }
    case "assistant": {
      const text = textOf(message.content)
      const calls = (message.tool_calls ?? []).flatMap((call): ReadonlyArray<LlmClient.ContentBlock> =>
        call.type === "function"
          ? [{
            type: "tool_use",
            id: call.id,
            name: call.function.name,
            input: parseArguments(call.function.arguments)
          }]
          : []
      )
      return calls.length === 0
        ? { role: "assistant", content: text }
        : { role: "assistant", content: [...(text === "" ? [] : [{ type: "text" as const, text }]), ...calls] }
    }
  }
}

const toolChoiceOf = (choice: ChatCompletionToolChoiceOption): LlmClient.ToolChoice | undefined => {
  if (choice === "none" || choice === "auto") return { type: choice }
  if (choice === "required") return { type: "any" }
  return choice.type === "function" ? { type: "tool", name: choice.function.name } : undefined
}

/**
 * Chat completions params as `LlmClient.Request`: what the estimator counts,
 * the quota key and the budget go by. The params travel with it as its
 * `native` body, which the OpenAI-compatible layer sends as they are.
 *
 * @since 0.1.0
 * @category utilities
 */
export const toRequest = (
  params: ChatCompletionCreateParamsBase,
  call: CallOptions = {},
  defaultMaxTokens = 4_096
): LlmClient.Request => {
  const system = params.messages
    .flatMap((message) => message.role === "system" || message.role === "developer" ? [textOf(message.content)] : [])
    .join("\n")
  const tools = params.tools?.flatMap((tool): ReadonlyArray<LlmClient.Tool> =>
    tool.type === "function"
      ? [{
        name: tool.function.name,
        description: tool.function.description,
        inputSchema: (tool.function.parameters ?? { type: "object" }) as LlmClient.Tool["inputSchema"]
      }]
      : []
  )
  const toolChoice = params.tool_choice === undefined ? undefined : toolChoiceOf(params.tool_choice)
  const metadata: LlmClient.RequestMetadata = {
    ...(call.priority === undefined ? {} : { priority: call.priority }),
    ...(call.tenant === undefined ? {} : { tenant: call.tenant }),
    ...(call.job === undefined ? {} : { job: call.job })
  }
  const { stream: _stream, stream_options: _options, ...sent } = params
  const stop = params.stop == null ? undefined : typeof params.stop === "string" ? [params.stop] : params.stop
  return {
    model: params.model,
    ...(system === "" ? {} : { system }),
    messages: params.messages.flatMap((message) => {
      const mapped = messageOf(message)
      return mapped === undefined ? [] : [mapped]
    }),
    ...(tools === undefined ? {} : { tools }),
    ...(toolChoice === undefined ? {} : { toolChoice }),
    maxOutputTokens: params.max_completion_tokens ?? params.max_tokens ?? defaultMaxTokens,
    ...(params.temperature == null ? {} : { temperature: params.temperature }),
    ...(stop === undefined ? {} : { stopSequences: stop }),
    ...(Object.keys(metadata).length === 0 ? {} : { metadata }),
    native: OpenAiCompatible.native(sent)
  }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/**
 * The async iterable a streamed `create` resolves to, as the SDK's `Stream`:
 * iterable once; `controller.abort()` or a `break` stops the response and
 * releases the call's admission.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChunkStream extends AsyncIterable<ChatCompletionChunk> {
  readonly controller: AbortController
}

/**
 * The governed client: the SDK's `chat.completions` surface, and `close`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client {
  readonly chat: {
    readonly completions: {
      /** `openai.chat.completions.create(params)`, governed; with `stream: true`, an async iterable of chunks. */
      readonly create: {
        (params: ChatCompletionCreateParamsNonStreaming, options?: CallOptions): Promise<ChatCompletion>
        (params: ChatCompletionCreateParamsStreaming, options?: CallOptions): Promise<ChunkStream>
        (params: ChatCompletionCreateParamsBase, options?: CallOptions): Promise<ChatCompletion | ChunkStream>
      }
    }
  }
  /** Live figures of a model's quota: waiting calls, calls in flight, bucket levels. */
  readonly stats: (model: string) => Promise<RateLimiter.KeyStats>
  /** Each budget limit's state now: spent and reserved dollars. Empty without a budget. */
  readonly budget: () => Promise<ReadonlyArray<Budget.Status>>
  /** Releases the runtime; later calls reject with `ClosedError`. Idempotent. */
  readonly close: () => Promise<void>
}

/** The quota key of a model: the Governor's default, `openai/model`. */
const keyOf = (model: string): string =>
  model.startsWith("openai/")
    ? model
    : Governor.defaultKey(false)({ model, messages: [], maxOutputTokens: 1 }, "openai")

/**
 * Everything a client runs on, from valid options: the governed `LlmClient`
 * over the OpenAI-compatible layer (on `fetch`), the limiter, the estimator, the budget.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: OpenAiClientOptions) => {
  const provider = OpenAiCompatible.layer({
    apiKey: Redacted.make(options.apiKey),
    baseURL: options.baseURL ?? "https://api.openai.com/v1",
    ...(options.auth === undefined ? {} : { auth: options.auth }),
    ...(options.query === undefined ? {} : { query: options.query }),
    ...(options.timeout === undefined ? {} : { timeout: Duration.decode(options.timeout as Duration.DurationInput) })
  }).pipe(Layer.provide(FetchHttpClient.layer))
  return Governor.layer({
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    ...(options.fallback === undefined ? {} : { fallback: options.fallback.map((model) => ({ model })) }),
    ...(options.priority === undefined ? {} : { priority: options.priority }),
    // Two params that read alike to Sluice may differ (images, response formats): never joined.
    coalesce: false
  }).pipe(
    Layer.provideMerge(provider),
    Layer.provideMerge(servicesLayer(options, keyOf))
  )
}

/** Whether the caller asked for the usage chunk itself. */
const wantsUsage = (params: ChatCompletionCreateParamsBase): boolean => params.stream_options?.include_usage === true

/**
 * A governed client with the `openai` SDK's `chat.completions` surface. Throws
 * {@link InvalidOptionsError} naming every bad option.
 *
 * @example
 * ```ts
 * import { createClient } from "@sluice/providers/PromiseOpenAi"
 *
 * const main = async (simulatorUrl: string) => {
 *   const openai = createClient({ apiKey: "sim-key", baseURL: `${simulatorUrl}/v1`, tenant: "acme" })
 *   const completion = await openai.chat.completions.create({
 *     model: "gpt-4o-mini",
 *     messages: [{ role: "user", content: "Hi" }],
 *     max_tokens: 200
 *   })
 *   console.log(completion.choices[0]?.message.content, completion.usage)
 *   await openai.close()
 * }
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const createClient = (options: OpenAiClientOptions): Client => {
  const valid = validate(options)
  if (Either.isLeft(valid)) throw new InvalidOptionsError(valid.left)
  const defaultMaxTokens = valid.right.defaultMaxTokens ?? 4_096
  const runtime = ManagedRuntime.make(layer(valid.right))
  const runner = Facade.runner(runtime, toError, () => new ClosedError(new ClientClosed()))
  const { close, ensureOpen, run } = runner
  const callOf = (call: CallOptions): CallOptions => Facade.withDefaults(valid.right, call)

  const checked = (params: ChatCompletionCreateParamsBase) =>
    Predicate.isRecord(params) && Array.isArray(params.messages) && typeof params.model === "string"
      ? Effect.succeed(params)
      : Effect.fail(new InvalidRequest({ detail: "Expected chat completions params with `model` and `messages`" }))

  const complete = (params: ChatCompletionCreateParamsNonStreaming, call: CallOptions) =>
    run(
      Effect.gen(function*() {
        const client = yield* LlmClient.LlmClient
        const response = yield* client.complete(toRequest(yield* checked(params), callOf(call), defaultMaxTokens))
        // The layer answers native params with the API's completion; without it something is broken.
        return response.native?.api === OpenAiCompatible.api
          ? response.native.body as ChatCompletion
          : yield* Effect.dieMessage("Sluice: the API's completion was lost on the way back")
      }),
      call.signal
    )

  const streamed = (params: ChatCompletionCreateParamsStreaming, call: CallOptions): Promise<ChunkStream> => {
    try {
      ensureOpen()
    } catch (error) {
      return Promise.reject(error)
    }
    const usageAsked = wantsUsage(params)
    const chunks = Stream.unwrap(Effect.gen(function*() {
      const client = yield* LlmClient.LlmClient
      return client.stream(toRequest(yield* checked(params), callOf(call), defaultMaxTokens))
    })).pipe(
      Stream.filterMap((event) => {
        if (event._tag !== "Native" || event.event.api !== OpenAiCompatible.api) return Option.none()
        const chunk = event.event.body as ChatCompletionChunk
        // The usage chunk Sluice asked for reaches only a caller who asked for it too.
        return !usageAsked && chunk.choices.length === 0 ? Option.none() : Option.some(chunk)
      })
    )
    return new Facade.GovernedStream((signal) =>
      Facade.pull(runtime, chunks, toError, call.signal ? AbortSignal.any([signal, call.signal]) : signal)
    ).prime()
  }

  return {
    chat: {
      completions: {
        create: ((params: ChatCompletionCreateParamsBase, call: CallOptions = {}) =>
          params.stream === true
            ? streamed({ ...params, stream: true }, call)
            : complete({ ...params, stream: false }, call)) as Client["chat"]["completions"]["create"]
      }
    },
    ...Facade.status(runner, keyOf),
    close
  }
}
