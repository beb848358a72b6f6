/**
 * Budgets: how much may be spent per window (calendar UTC day or month, or a
 * rolling duration) and scope (global, a tenant, a job).
 *
 * Before a call the worst case (estimated input + `max_tokens` of output at
 * the model's prices) is reserved in every limit that applies, all or none;
 * a call that would pass a limit fails with {@link BudgetExceeded} before it
 * is made. After the call, the reservation settles to the real cost.
 * Crossing a threshold (50 %, 80 %, 100 % by default) is reported once per
 * window through a hook, a log line and a metric.
 *
 * The ledger is a store behind its own tag: in memory here, over any SQL
 * database in `@sluice/core/Budget/Sql` (SQLite keeps a day's spend across
 * restarts). Money is integer micro-dollars in the ledger.
 *
 * @example
 * ```ts
 * import { Budget, Pricing } from "@sluice/core"
 *
 * const BudgetLive = Budget.layer({
 *   limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 50 }, { scope: { _tag: "tenant", id: "acme" }, window: "month", limitUsd: 200 }]
 * }).pipe(Layer.provide([Pricing.layer(), Budget.layerLedgerMemory]))
 * ```
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as ParseResult from "effect/ParseResult"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type * as LlmClient from "./LlmClient.js"
import * as Pricing from "./Pricing.js"

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/** Who a limit applies to. */
export const Scope = Schema.Union(
  Schema.TaggedStruct("global", {}),
  Schema.TaggedStruct("tenant", { id: Schema.NonEmptyString }),
  Schema.TaggedStruct("job", { id: Schema.NonEmptyString })
)
export type Scope = typeof Scope.Type

/** A calendar UTC day or month, or a rolling duration such as "24 hours". */
export const Window = Schema.Union(
  Schema.Literal("day", "month"),
  Schema.Struct({ rolling: Schema.Union(Schema.String, Schema.Number) })
)
export type Window = typeof Window.Type

/** One limit: at most `limitUsd` per window in a scope, with thresholds to report. */
export const Limit = Schema.Struct({
  scope: Scope,
  window: Window,
  limitUsd: Schema.Number.pipe(Schema.finite(), Schema.positive()),
  thresholds: Schema.optionalWith(Schema.Array(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(1))), { exact: true })
})
export type Limit = typeof Limit.Type
export type LimitInput = typeof Limit.Encoded

/** Limits that could not be accepted; each issue names its field (`limits.0.limitUsd`). */
export class InvalidBudget extends Data.TaggedError("InvalidBudget")<{
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message(): string {
    return `Invalid budget: ${this.issues.map((issue) => `${issue.path}: ${issue.message}`).join("; ")}`
  }
}

const scopeName = (scope: Scope): string => scope._tag === "global" ? "global" : `${scope._tag}:${scope.id}`
const windowName = (window: Window): string => typeof window === "string" ? window : `rolling ${window.rolling}`

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A call would pass a limit: refused before any money was spent. */
export class BudgetExceeded extends Data.TaggedError("BudgetExceeded")<{
  readonly scope: string
  readonly window: string
  readonly spentUsd: number
  readonly reservedUsd: number
  readonly limitUsd: number
  readonly attemptedUsd: number
}> {
  override get message(): string {
    return `Budget exceeded for ${this.scope} (${this.window}): spent $${this.spentUsd.toFixed(4)}, reserved $${this.reservedUsd.toFixed(4)}, limit $${this.limitUsd.toFixed(2)}; this call needs up to $${this.attemptedUsd.toFixed(4)}`
  }
}

/** The ledger could not be read or written. */
export class BudgetLedgerError extends Data.TaggedError("BudgetLedgerError")<{ readonly operation: string; readonly cause: unknown }> {
  override get message(): string {
    return `Budget ledger failed to ${this.operation}: ${String(this.cause)}`
  }
}

// ---------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------

/** One amount against one limit's bucket. `sinceMs`: only spend after it counts (rolling windows). */
export interface Charge {
  /** The limit's bucket for the current window, e.g. `global|day|2026-11-22`. */
  readonly bucket: string
  readonly limitMicros: number
  readonly micros: number
  readonly sinceMs: number
}

/** The answer to a reservation. */
export type LedgerReservation =
  | { readonly _tag: "Reserved" }
  | { readonly _tag: "Exceeded"; readonly charge: Charge; readonly spentMicros: number; readonly reservedMicros: number }

/** Where spend lives. Every operation is atomic. */
export class BudgetLedger extends Context.Tag("@sluice/core/Budget/BudgetLedger")<BudgetLedger, {
  /** Reserves every charge under `id`, or none when one would pass its limit. */
  readonly reserve: (id: string, charges: ReadonlyArray<Charge>, now: number) => Effect.Effect<LedgerReservation, BudgetLedgerError>
  /** Replaces the reservation `id` by spend, per bucket. */
  readonly settle: (id: string, spend: ReadonlyArray<{ readonly bucket: string; readonly micros: number }>, now: number) => Effect.Effect<void, BudgetLedgerError>
  /** Drops the reservation `id`: nothing was spent. */
  readonly cancel: (id: string) => Effect.Effect<void, BudgetLedgerError>
  /** Spend since `sinceMs` and open reservations of a bucket. */
  readonly usage: (bucket: string, sinceMs: number) => Effect.Effect<{ readonly spentMicros: number; readonly reservedMicros: number }, BudgetLedgerError>
}>() {}

interface MemoryState {
  readonly events: Map<string, Array<{ readonly at: number; readonly micros: number }>>
  readonly reservations: Map<string, ReadonlyArray<{ readonly bucket: string; readonly micros: number }>>
}

const sumSince = (events: ReadonlyArray<{ readonly at: number; readonly micros: number }> | undefined, sinceMs: number) =>
  (events ?? []).reduce((sum, event) => event.at >= sinceMs ? sum + event.micros : sum, 0)

const reservedIn = (reservations: MemoryState["reservations"], bucket: string) => {
  let total = 0
  for (const charges of reservations.values()) for (const charge of charges) if (charge.bucket === bucket) total += charge.micros
  return total
}

/** The ledger in memory: one process, lost on restart. */
export const makeLedgerMemory: Effect.Effect<BudgetLedger["Type"]> = Effect.map(
  // Suspended: each ledger needs maps of its own, not ones made once when the module loads.
  Effect.suspend(() => Ref.make<MemoryState>({ events: new Map(), reservations: new Map() })),
  (state) =>
    BudgetLedger.of({
      reserve: (id, charges) =>
        Ref.modify(state, (current): readonly [LedgerReservation, MemoryState] => {
          for (const charge of charges) {
            const spentMicros = sumSince(current.events.get(charge.bucket), charge.sinceMs)
            const reservedMicros = reservedIn(current.reservations, charge.bucket)
            if (spentMicros + reservedMicros + charge.micros > charge.limitMicros) {
              return [{ _tag: "Exceeded", charge, spentMicros, reservedMicros }, current]
            }
          }
          current.reservations.set(id, charges.map(({ bucket, micros }) => ({ bucket, micros })))
          return [{ _tag: "Reserved" }, current]
        }),
      settle: (id, spend, now) =>
        Ref.update(state, (current) => {
          current.reservations.delete(id)
          for (const { bucket, micros } of spend) {
            const events = current.events.get(bucket) ?? []
            events.push({ at: now, micros })
            current.events.set(bucket, events)
          }
          return current
        }),
      cancel: (id) => Ref.update(state, (current) => (current.reservations.delete(id), current)),
      usage: (bucket, sinceMs) =>
        Effect.map(Ref.get(state), (current) => ({
          spentMicros: sumSince(current.events.get(bucket), sinceMs),
          reservedMicros: reservedIn(current.reservations, bucket)
        }))
    })
)

/** The in-memory ledger. */
export const layerLedgerMemory: Layer.Layer<BudgetLedger> = Layer.effect(BudgetLedger, makeLedgerMemory)

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/** A threshold crossed. */
export interface ThresholdEvent {
  readonly scope: string
  readonly window: string
  readonly threshold: number
  readonly spentUsd: number
  readonly limitUsd: number
}

/** Options of the budget. */
export interface Options {
  readonly limits: ReadonlyArray<LimitInput>
  /** Called once per limit, window and threshold crossed. */
  readonly onThreshold?: ((event: ThresholdEvent) => Effect.Effect<void>) | undefined
}

/** What a call is about, for its budget. */
export interface Call {
  readonly model: string
  readonly tenant?: string | undefined
  readonly job?: string | undefined
  readonly inputTokens: number
  readonly maxOutputTokens: number
  /** The request marks a prompt-cache breakpoint: its worst case prices the input at the cache-write price. */
  readonly cacheable?: boolean | undefined
}

/** A reservation held for one call. */
export interface Reservation {
  readonly reservedUsd: number
  /** Replaces the reservation by the real cost of `usage`. */
  readonly settle: (usage: LlmClient.Usage) => Effect.Effect<void, BudgetLedgerError | Pricing.UnknownModel>
  /** Gives the reservation back: the call was not made or not billed. */
  readonly cancel: Effect.Effect<void, BudgetLedgerError>
}

/** One limit's state now. */
export interface Status {
  readonly scope: string
  readonly window: string
  readonly spentUsd: number
  readonly reservedUsd: number
  readonly limitUsd: number
}

/** The budget service. */
export class Budget extends Context.Tag("@sluice/core/Budget")<Budget, {
  readonly reserve: (call: Call) => Effect.Effect<Reservation, BudgetExceeded | Pricing.UnknownModel | BudgetLedgerError>
  readonly status: Effect.Effect<ReadonlyArray<Status>, BudgetLedgerError>
}>() {}

export const thresholdsCrossed = Metric.counter("sluice_budget_threshold_total", { description: "Budget thresholds crossed, by scope, window and threshold", incremental: true })
export const rejections = Metric.counter("sluice_budget_rejections_total", { description: "Calls refused by a budget, by scope", incremental: true })
export const spentUsd = Metric.gauge("sluice_budget_spent_usd", { description: "Spend in the current window, by scope and window" })

const dayMs = 86_400_000

/** The bucket of a limit for the window containing `now`, and where its counting starts. */
export const bucketOf = (limit: Limit, index: number, now: number): { readonly bucket: string; readonly sinceMs: number } => {
  const base = `${index}|${scopeName(limit.scope)}|${windowName(limit.window)}`
  if (limit.window === "day") {
    const start = Math.floor(now / dayMs) * dayMs
    return { bucket: `${base}|${new Date(start).toISOString().slice(0, 10)}`, sinceMs: start }
  }
  if (limit.window === "month") {
    const date = new Date(now)
    const start = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1)
    return { bucket: `${base}|${new Date(start).toISOString().slice(0, 7)}`, sinceMs: start }
  }
  return { bucket: base, sinceMs: now - Duration.toMillis(Duration.decode(limit.window.rolling as Duration.DurationInput)) }
}

const applies = (limit: Limit, call: Call): boolean =>
  limit.scope._tag === "global" || (limit.scope._tag === "tenant" ? call.tenant === limit.scope.id : call.job === limit.scope.id)

const tag = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>, tags: Record<string, string>) =>
  Object.entries(tags).reduce((tagged, [name, value]) => Metric.tagged(tagged, name, value), metric)

/** Builds a budget over the `Pricing` and `BudgetLedger` in context. */
export const make = (options: Options): Effect.Effect<Budget["Type"], InvalidBudget, Pricing.Pricing | BudgetLedger> =>
  Effect.gen(function*() {
    const limits = yield* Either.mapLeft(
      Schema.decodeUnknownEither(Schema.Array(Limit), { errors: "all", onExcessProperty: "error" })(options.limits),
      (error) => new InvalidBudget({ issues: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({ path: ["limits", ...issue.path].map(String).join("."), message: issue.message })) })
    )
    for (const limit of limits) {
      if (typeof limit.window !== "string" && Duration.decodeUnknown(limit.window.rolling)._tag === "None") {
        return yield* new InvalidBudget({ issues: [{ path: "limits.window.rolling", message: `Expected a duration such as "24 hours", got ${JSON.stringify(limit.window.rolling)}` }] })
      }
    }
    const pricing = yield* Pricing.Pricing
    const ledger = yield* BudgetLedger
    const fired = new Set<string>()
    let counter = 0

    const report = (limit: Limit, bucket: string, beforeMicros: number, afterMicros: number) =>
      Effect.gen(function*() {
        const limitMicros = Pricing.fromUsd(limit.limitUsd)
        const scope = scopeName(limit.scope)
        const window = windowName(limit.window)
        yield* Metric.set(tag(spentUsd, { scope, window }), Pricing.toUsd(afterMicros))
        for (const threshold of limit.thresholds ?? [0.5, 0.8, 1]) {
          const line = threshold * limitMicros
          const key = `${bucket}|${threshold}`
          if (afterMicros >= line && beforeMicros < line && !fired.has(key)) {
            fired.add(key)
            const event: ThresholdEvent = { scope, window, threshold, spentUsd: Pricing.toUsd(afterMicros), limitUsd: limit.limitUsd }
            yield* Effect.logWarning(`Sluice budget ${scope} (${window}) passed ${Math.round(threshold * 100)} %: $${event.spentUsd.toFixed(4)} of $${limit.limitUsd}`)
            yield* Metric.increment(tag(thresholdsCrossed, { scope, window, threshold: String(threshold) }))
            if (options.onThreshold !== undefined) yield* options.onThreshold(event)
          }
        }
      })

    const reserve = (call: Call) =>
      Effect.gen(function*() {
        const price = yield* pricing.price(call.model)
        const worst = Pricing.worstCaseMicros(price, call)
        const now = yield* Clock.currentTimeMillis
        const active = limits.flatMap((limit, index) => applies(limit, call) ? [{ limit, ...bucketOf(limit, index, now) }] : [])
        const id = `r${++counter}-${now}`
        const answer = yield* ledger.reserve(id, active.map(({ bucket, limit, sinceMs }) => ({ bucket, sinceMs, limitMicros: Pricing.fromUsd(limit.limitUsd), micros: worst })), now)
        if (answer._tag === "Exceeded") {
          const limit = active.find((entry) => entry.bucket === answer.charge.bucket)!.limit
          yield* Metric.increment(tag(rejections, { scope: scopeName(limit.scope) }))
          return yield* new BudgetExceeded({
            scope: scopeName(limit.scope),
            window: windowName(limit.window),
            spentUsd: Pricing.toUsd(answer.spentMicros),
            reservedUsd: Pricing.toUsd(answer.reservedMicros),
            limitUsd: limit.limitUsd,
            attemptedUsd: Pricing.toUsd(worst)
          })
        }
        let open = true
        const settle = (usage: LlmClient.Usage) =>
          Effect.gen(function*() {
            if (!open) return
            open = false
            const actual = Pricing.costMicros(price, usage)
            const at = yield* Clock.currentTimeMillis
            const before = yield* Effect.forEach(active, ({ bucket, sinceMs }) => ledger.usage(bucket, sinceMs))
            yield* ledger.settle(id, active.map(({ bucket }) => ({ bucket, micros: actual })), at)
            yield* Effect.forEach(active, ({ bucket, limit, sinceMs }, i) =>
              Effect.flatMap(ledger.usage(bucket, sinceMs), (after) => report(limit, bucket, before[i]!.spentMicros, after.spentMicros)))
          })
        const cancel = Effect.suspend(() => {
          if (!open) return Effect.void
          open = false
          return ledger.cancel(id)
        })
        return { reservedUsd: Pricing.toUsd(worst), settle, cancel } satisfies Reservation
      }).pipe(Effect.withSpan("Budget.reserve", { attributes: { model: call.model }, captureStackTrace: false }))

    const status = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return yield* Effect.forEach(limits, (limit, index) => {
        const { bucket, sinceMs } = bucketOf(limit, index, now)
        return Effect.map(ledger.usage(bucket, sinceMs), (usage): Status => ({
          scope: scopeName(limit.scope),
          window: windowName(limit.window),
          spentUsd: Pricing.toUsd(usage.spentMicros),
          reservedUsd: Pricing.toUsd(usage.reservedMicros),
          limitUsd: limit.limitUsd
        }))
      })
    })

    return Budget.of({ reserve, status })
  })

/** A budget over the `Pricing` and `BudgetLedger` in context. */
export const layer = (options: Options): Layer.Layer<Budget, InvalidBudget, Pricing.Pricing | BudgetLedger> => Layer.effect(Budget, make(options))
