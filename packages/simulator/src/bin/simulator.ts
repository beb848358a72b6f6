/**
 * `pnpm simulator` (from source) or `sluice-simulator` (the package's `bin`,
 * once built): runs the provider simulator until Ctrl-C.
 *
 *   pnpm simulator --port 8787 --rpm 50 --itpm 30000 --otpm 8000
 *   pnpm simulator --help
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as Simulator from "../Simulator.js"

const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

const positive = (name: string, fallback: number, description: string) =>
  Options.float(name).pipe(
    Options.withDefault(fallback),
    Options.withDescription(description),
    Options.mapEffect((value) =>
      value > 0 ? Effect.succeed(value) : invalid(`--${name} must be greater than 0, got ${value}`)
    )
  )

const nonNegative = (name: string, description: string) =>
  Options.float(name).pipe(
    Options.withDefault(0),
    Options.withDescription(description),
    Options.mapEffect((value) =>
      value >= 0 ? Effect.succeed(value) : invalid(`--${name} must be 0 or more, got ${value}`)
    )
  )

const probability = (name: string, description: string) =>
  Options.float(name).pipe(
    Options.withDefault(0),
    Options.withDescription(`${description} (a probability per request, 0 to 1)`),
    Options.mapEffect((value) =>
      value >= 0 && value <= 1 ? Effect.succeed(value) : invalid(`--${name} must be between 0 and 1, got ${value}`)
    )
  )

const defaults = Simulator.defaultQuota

const options = {
  host: Options.text("host").pipe(
    Options.withDefault("127.0.0.1"),
    Options.withDescription("Address to bind (127.0.0.1 keeps it off the network)")
  ),
  port: Options.integer("port").pipe(
    Options.withDefault(8787),
    Options.withDescription("Port to listen on (0 picks a free one)"),
    Options.mapEffect((port) =>
      port >= 0 && port <= 65535 ? Effect.succeed(port) : invalid(`--port must be between 0 and 65535, got ${port}`)
    )
  ),
  rpm: positive("rpm", defaults.requestsPerMinute, "Requests per minute per API key and model"),
  itpm: positive("itpm", defaults.inputTokensPerMinute, "Input tokens per minute per API key and model"),
  otpm: positive("otpm", defaults.outputTokensPerMinute, "Output tokens per minute per API key and model"),
  tpm: Options.float("tpm").pipe(
    Options.optional,
    Options.withDescription("OpenAI endpoint: combined tokens per minute (default itpm + otpm)")
  ),
  timeScale: positive(
    "time-scale",
    1,
    "How many simulated minutes pass in one real minute (60: a minute lasts a second)"
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(1),
    Options.withDescription("Seed of the fault and latency randomness")
  ),
  latencyMs: nonNegative("latency-ms", "Base latency of every answer, in milliseconds"),
  latencyPerTokenMs: nonNegative("latency-per-token-ms", "Extra latency per output token, in milliseconds"),
  jitterMs: nonNegative("jitter-ms", "Uniform random latency added on top, in milliseconds"),
  overloadedRate: probability("overloaded-rate", "529 overloaded_error"),
  serverErrorRate: probability("server-error-rate", "500 api_error"),
  resetRate: probability("reset-rate", "Connection reset"),
  malformedRate: probability("malformed-rate", "Truncated JSON body"),
  foreignShare: Options.float("foreign-share").pipe(
    Options.withDefault(0),
    Options.withDescription("Share (0 to 1) of every key's quota taken by another, unseen consumer"),
    Options.mapEffect((value) =>
      value >= 0 && value < 1
        ? Effect.succeed(value)
        : invalid(`--foreign-share must be at least 0 and below 1, got ${value}`)
    )
  ),
  quota: Options.keyValueMap("quota").pipe(
    Options.optional,
    Options.withDescription("A quota for one API key: --quota KEY=RPM,ITPM,OTPM (repeatable)")
  )
}

const parseQuotas = (entries: Option.Option<HashMap.HashMap<string, string>>) =>
  Effect.forEach(
    Option.match(entries, { onNone: () => [], onSome: (map) => [...HashMap.entries(map)] }),
    ([key, value]) => {
      const numbers = value.split(",").map(Number)
      return numbers.length === 3 && numbers.every((number) => Number.isFinite(number) && number > 0)
        ? Effect.succeed(
          [key, {
            requestsPerMinute: numbers[0]!,
            inputTokensPerMinute: numbers[1]!,
            outputTokensPerMinute: numbers[2]!
          }] as const
        )
        : invalid(`--quota ${key}=${value}: expected KEY=RPM,ITPM,OTPM with three positive numbers`)
    }
  )

const simulator = Command.make("simulator", options, (flags) =>
  Effect.gen(function*() {
    const quotas = Object.fromEntries(yield* parseQuotas(flags.quota))
    const quota: Simulator.Quota = {
      requestsPerMinute: flags.rpm,
      inputTokensPerMinute: flags.itpm,
      outputTokensPerMinute: flags.otpm,
      ...(Option.isSome(flags.tpm) ? { tokensPerMinute: flags.tpm.value } : {})
    }
    const running = yield* Simulator.serve({
      host: flags.host,
      port: flags.port,
      quota,
      quotas,
      timeScale: flags.timeScale,
      seed: flags.seed,
      latency: { baseMs: flags.latencyMs, perOutputTokenMs: flags.latencyPerTokenMs, jitterMs: flags.jitterMs },
      faults: {
        overloadedRate: flags.overloadedRate,
        serverErrorRate: flags.serverErrorRate,
        resetRate: flags.resetRate,
        malformedRate: flags.malformedRate
      },
      ...(flags.foreignShare > 0 ? { foreignLoad: { share: flags.foreignShare } } : {})
    })
    yield* Console.log(`Sluice provider simulator listening on ${running.url}`)
    yield* Console.log(
      `quota per API key and model: ${quota.requestsPerMinute} requests, ${quota.inputTokensPerMinute} input tokens, ${quota.outputTokensPerMinute} output tokens per minute${
        flags.timeScale === 1 ? "" : ` (time ×${flags.timeScale})`
      }`
    )
    for (const [key, own] of Object.entries(quotas)) {
      yield* Console.log(
        `  key ${key}: ${own.requestsPerMinute} / ${own.inputTokensPerMinute} / ${own.outputTokensPerMinute}`
      )
    }
    yield* Console.log(`point the SDK at it:  new Anthropic({ baseURL: "${running.url}", apiKey: "sim-key" })`)
    yield* Console.log(`stats:                curl ${running.url}/_sim/stats`)
    return yield* Effect.never
  }).pipe(Effect.scoped))

const cli = Command.run(simulator, { name: "Sluice provider simulator", version: "0.1.0" })

cli(process.argv).pipe(
  // @effect/cli has printed what was wrong with the flags already; exit 1 without a second, raw report.
  Effect.catchIf(ValidationError.isValidationError, () => Effect.sync(() => process.exit(1))),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
