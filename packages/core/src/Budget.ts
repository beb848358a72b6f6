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
 * import { Layer } from "effect"
 *
 * const BudgetLive = Budget.layer({
 *   limits: [{ scope: { _tag: "global" }, window: "day", limitUsd: 50 }, { scope: { _tag: "tenant", id: "acme" }, window: "month", limitUsd: 200 }]
 * }).pipe(Layer.provide([Pricing.layer(), Budget.layerLedgerMemory]))
 * ```
 *
 * @since 0.1.0
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
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import type * as LlmClient from "./LlmClient.js"
import * as Pricing from "./Pricing.js"
import { BudgetExceeded, BudgetLedgerError } from "./SluiceError.js"

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/**
 * Who a limit applies to.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Scope = Schema.Union(
  Schema.TaggedStruct("global", {}),
  Schema.TaggedStruct("tenant", { id: Schema.NonEmptyString }),
  Schema.TaggedStruct("job", { id: Schema.NonEmptyString })
)
/**
 * @since 0.1.0
 * @category models
 */
export type Scope = typeof Scope.Type

/**
 * A calendar UTC day or month, or a rolling duration such as "24 hours".
 *
 * @since 0.1.0
 * @category utilities
 */
export const Window = Schema.Union(
  Schema.Literal("day", "month"),
  Schema.Struct({ rolling: Schema.Union(Schema.String, Schema.Number) })
)
/**
 * @since 0.1.0
 * @category models
 */
export type Window = typeof Window.Type

/**
 * One limit: at most `limitUsd` per window in a scope, with thresholds to report.
 *
 * @since 0.1.0
 * @category utilities
 */
export const Limit = Schema.Struct({
  scope: Scope,
  window: Window,
  limitUsd: Schema.Number.pipe(Schema.finite(), Schema.positive()),
  thresholds: Schema.optionalWith(
    Schema.Array(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(1))),
    { exact: true }
  )
})
/**
 * @since 0.1.0
 * @category models
 */
export type Limit = typeof Limit.Type
/**
 * @since 0.1.0
 * @category models
 */
export type LimitInput = typeof Limit.Encoded

/**
 * Limits that could not be accepted; each issue names its field (`limits.0.limitUsd`).
 *
 * @since 0.1.0
 * @category errors
 */
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

// Defined in `SluiceError` with every error a call can fail with; named here as the budget's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  BudgetExceeded,
  /**
   * @since 0.1.0
   * @category errors
   */
  BudgetLedgerError
} from "./SluiceError.js"

// ---------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------

/**
 * How a bucket counts its spend. A calendar window is one counter that ends with
 * the window; a rolling window is a ring of {@link rollingSlices} counters, each
 * a slice of the window, of which the last `rollingSlices + 1` are summed (so a
 * spend is remembered for between one window and one window plus a slice: a
 * budget may remember a little long, never forget early).
 *
 * @since 0.1.0
 * @category models
 */
export type Counting =
  | { readonly _tag: "calendar"; readonly endsAt: number }
  | { readonly _tag: "rolling"; readonly windowMs: number }

/**
 * Slices of a rolling window.
 *
 * @since 0.1.0
 * @category utilities
 */
export const rollingSlices = 60

/**
 * How long a counter outlives its window, for clocks that differ a little between processes.
 *
 * @since 0.1.0
 * @category utilities
 */
export const counterMarginMs = 3_600_000

/**
 * The counters of a bucket at `now`: the one a spend made now adds to
 * (`current`, to be kept for `keepMs` from now, set once when it is created) and
 * every one whose sum is the spend in the window (`summed`).
 *
 * @since 0.1.0
 * @category utilities
 */
export const countersAt = (bucket: string, counting: Counting, now: number): {
  readonly current: string
  readonly summed: ReadonlyArray<string>
  readonly keepMs: number
} => {
  if (counting._tag === "calendar") {
    return { current: bucket, summed: [bucket], keepMs: Math.max(0, counting.endsAt - now) + counterMarginMs }
  }
  const sliceMs = Math.max(1, Math.ceil(counting.windowMs / rollingSlices))
  const slice = Math.floor(now / sliceMs)
  const summed: Array<string> = []
  for (let k = slice - rollingSlices; k <= slice; k++) summed.push(`${bucket}#${k}`)
  return {
    current: `${bucket}#${slice}`,
    summed,
    keepMs: (slice + 1) * sliceMs + counting.windowMs - now + counterMarginMs
  }
}

/**
 * One amount against one limit's bucket.
 *
 * @since 0.1.0
 * @category models
 */
export interface Charge {
  /** The limit's bucket for the current window, e.g. `0|global|day|2026-11-22`. */
  readonly bucket: string
  readonly counting: Counting
  readonly limitMicros: number
  readonly micros: number
}

/**
 * The answer to a reservation.
 *
 * @since 0.1.0
 * @category models
 */
export type LedgerReservation =
  | { readonly _tag: "Reserved" }
  | {
    readonly _tag: "Exceeded"
    readonly charge: Charge
    readonly spentMicros: number
    readonly reservedMicros: number
  }

/**
 * A real cost to record in a bucket.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spend {
  readonly bucket: string
  readonly counting: Counting
  readonly micros: number
}

/**
 * Where spend lives. Every operation is atomic and costs a bounded number of
 * counter reads and writes, however much was spent in the window: spend is kept
 * as counters per window (or per slice of a rolling window), open reservations
 * as a counter per bucket beside one entry per reservation.
 *
 * A reservation holds until it is settled or cancelled, or until `expiresAt`
 * (the Budget's clock) has passed: then the next operation on its bucket gives it
 * back, so a process that died holding one does not keep it for ever.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetLedger extends Context.Tag("@sluice/core/Budget/BudgetLedger")<BudgetLedger, {
  /** Reserves every charge under `id` until `expiresAt`, or none when one would pass its limit. */
  readonly reserve: (
    id: string,
    charges: ReadonlyArray<Charge>,
    now: number,
    expiresAt: number
  ) => Effect.Effect<LedgerReservation, BudgetLedgerError>
  /**
   * Replaces the reservation `id` (if it still holds) by spend; answers, per
   * entry of `spend`, the bucket's spend in its window after this one.
   */
  readonly settle: (
    id: string,
    spend: ReadonlyArray<Spend>,
    now: number
  ) => Effect.Effect<ReadonlyArray<number>, BudgetLedgerError>
  /** Drops the reservation `id`: nothing was spent. Cancelling an unknown id does nothing. */
  readonly cancel: (id: string) => Effect.Effect<void, BudgetLedgerError>
  /** Spend in the window containing `now`, and open reservations, of a bucket. */
  readonly usage: (
    bucket: string,
    counting: Counting,
    now: number
  ) => Effect.Effect<{ readonly spentMicros: number; readonly reservedMicros: number }, BudgetLedgerError>
}>() {}

interface Hold {
  readonly expiresAt: number
  readonly charges: ReadonlyArray<{ readonly bucket: string; readonly micros: number }>
}

/**
 * The memory ledger's state, with every operation as a plain function of it.
 * Bounded: counters of past windows and expired reservations are swept at most
 * once a minute of the Budget's clock, so the maps hold the live windows' counters
 * (one per calendar bucket, at most `rollingSlices + 1` per rolling one) and the
 * open reservations.
 */
class MemoryLedger {
  readonly counters = new Map<string, { micros: number; readonly expiresAt: number }>()
  readonly held = new Map<string, number>()
  readonly holds = new Map<string, Hold>()
  private nextSweep = Number.NEGATIVE_INFINITY

  sweep(now: number): void {
    if (now < this.nextSweep) return
    this.nextSweep = now + 60_000
    for (const [name, counter] of this.counters) if (counter.expiresAt <= now) this.counters.delete(name)
    for (const [id, hold] of this.holds) if (hold.expiresAt <= now) this.release(id)
  }

  release(id: string): void {
    const hold = this.holds.get(id)
    if (hold === undefined) return
    this.holds.delete(id)
    for (const { bucket, micros } of hold.charges) {
      const left = (this.held.get(bucket) ?? 0) - micros
      if (left > 0) this.held.set(bucket, left)
      else this.held.delete(bucket)
    }
  }

  spent(bucket: string, counting: Counting, now: number): number {
    let total = 0
    for (const name of countersAt(bucket, counting, now).summed) {
      const counter = this.counters.get(name)
      if (counter !== undefined && counter.expiresAt > now) total += counter.micros
    }
    return total
  }

  reserve(id: string, charges: ReadonlyArray<Charge>, now: number, expiresAt: number): LedgerReservation {
    this.sweep(now)
    for (const charge of charges) {
      const spentMicros = this.spent(charge.bucket, charge.counting, now)
      const reservedMicros = this.held.get(charge.bucket) ?? 0
      if (spentMicros + reservedMicros + charge.micros > charge.limitMicros) {
        return { _tag: "Exceeded", charge, spentMicros, reservedMicros }
      }
    }
    this.release(id)
    this.holds.set(id, { expiresAt, charges: charges.map(({ bucket, micros }) => ({ bucket, micros })) })
    for (const { bucket, micros } of charges) this.held.set(bucket, (this.held.get(bucket) ?? 0) + micros)
    return { _tag: "Reserved" }
  }

  settle(id: string, spend: ReadonlyArray<Spend>, now: number): ReadonlyArray<number> {
    this.sweep(now)
    this.release(id)
    return spend.map(({ bucket, counting, micros }) => {
      const { current, keepMs } = countersAt(bucket, counting, now)
      const counter = this.counters.get(current)
      if (counter === undefined || counter.expiresAt <= now) {
        this.counters.set(current, { micros, expiresAt: now + keepMs })
      } else counter.micros += micros
      return this.spent(bucket, counting, now)
    })
  }

  usage(bucket: string, counting: Counting, now: number) {
    this.sweep(now)
    return { spentMicros: this.spent(bucket, counting, now), reservedMicros: this.held.get(bucket) ?? 0 }
  }
}

/**
 * The ledger in memory: one process, lost on restart.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeLedgerMemory: Effect.Effect<BudgetLedger["Type"]> = Effect.sync(() => {
  // Each ledger needs maps of its own, not ones made once when the module loads.
  const state = new MemoryLedger()
  return BudgetLedger.of({
    reserve: (id, charges, now, expiresAt) => Effect.sync(() => state.reserve(id, charges, now, expiresAt)),
    settle: (id, spend, now) => Effect.sync(() => state.settle(id, spend, now)),
    cancel: (id) => Effect.sync(() => state.release(id)),
    usage: (bucket, counting, now) => Effect.sync(() => state.usage(bucket, counting, now))
  })
})

/**
 * The in-memory ledger.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLedgerMemory: Layer.Layer<BudgetLedger> = Layer.effect(BudgetLedger, makeLedgerMemory)

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/**
 * A threshold crossed.
 *
 * @since 0.1.0
 * @category models
 */
export interface ThresholdEvent {
  readonly scope: string
  readonly window: string
  readonly threshold: number
  readonly spentUsd: number
  readonly limitUsd: number
}

/**
 * Options of the budget.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly limits: ReadonlyArray<LimitInput>
  /**
   * Called once per limit, window and threshold crossed (a rolling window's
   * threshold fires again once its spend has fallen back under the line).
   */
  readonly onThreshold?: ((event: ThresholdEvent) => Effect.Effect<void>) | undefined
  /**
   * How long a reservation holds when it is neither settled nor cancelled (its
   * process died, or the ledger was down when it ended). Default 1 hour. A call
   * that outlasts it still records its spend when it settles.
   */
  readonly reservationTtl?: Duration.DurationInput | undefined
}

/**
 * What a call is about, for its budget.
 *
 * @since 0.1.0
 * @category models
 */
export interface Call {
  readonly model: string
  readonly tenant?: string | undefined
  readonly job?: string | undefined
  readonly inputTokens: number
  readonly maxOutputTokens: number
  /** The request marks a prompt-cache breakpoint: its worst case prices the input at the cache-write price. */
  readonly cacheable?: boolean | undefined
}

/**
 * A reservation held for one call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reservation {
  readonly reservedUsd: number
  /** Replaces the reservation by the real cost of `usage`. */
  readonly settle: (usage: LlmClient.Usage) => Effect.Effect<void, BudgetLedgerError | Pricing.UnknownModel>
  /** Gives the reservation back: the call was not made or not billed. */
  readonly cancel: Effect.Effect<void, BudgetLedgerError>
}

/**
 * One limit's state now.
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly scope: string
  readonly window: string
  readonly spentUsd: number
  readonly reservedUsd: number
  readonly limitUsd: number
}

/**
 * The budget service.
 *
 * @since 0.1.0
 * @category errors
 */
export class Budget extends Context.Tag("@sluice/core/Budget")<Budget, {
  readonly reserve: (
    call: Call
  ) => Effect.Effect<Reservation, BudgetExceeded | Pricing.UnknownModel | BudgetLedgerError>
  readonly status: Effect.Effect<ReadonlyArray<Status>, BudgetLedgerError>
}>() {}

/**
 * @since 0.1.0
 * @category utilities
 */
export const thresholdsCrossed = Metric.counter("sluice_budget_threshold_total", {
  description: "Budget thresholds crossed, by scope, window and threshold",
  incremental: true
})
/**
 * @since 0.1.0
 * @category utilities
 */
export const rejections = Metric.counter("sluice_budget_rejections_total", {
  description: "Calls refused by a budget, by scope",
  incremental: true
})
/**
 * @since 0.1.0
 * @category utilities
 */
export const spentUsd = Metric.gauge("sluice_budget_spent_usd", {
  description: "Spend in the current window, by scope and window"
})

const dayMs = 86_400_000

/**
 * The bucket of a limit for the window containing `now`, and how the ledger counts it.
 *
 * @since 0.1.0
 * @category utilities
 */
export const bucketOf = (
  limit: Limit,
  index: number,
  now: number
): { readonly bucket: string; readonly counting: Counting } => {
  const base = `${index}|${scopeName(limit.scope)}|${windowName(limit.window)}`
  if (limit.window === "day") {
    const start = Math.floor(now / dayMs) * dayMs
    return {
      bucket: `${base}|${new Date(start).toISOString().slice(0, 10)}`,
      counting: { _tag: "calendar", endsAt: start + dayMs }
    }
  }
  if (limit.window === "month") {
    const date = new Date(now)
    const start = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1)
    return {
      bucket: `${base}|${new Date(start).toISOString().slice(0, 7)}`,
      counting: { _tag: "calendar", endsAt: Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1) }
    }
  }
  return {
    bucket: base,
    counting: {
      _tag: "rolling",
      windowMs: Duration.toMillis(Duration.decode(limit.window.rolling as Duration.DurationInput))
    }
  }
}

/**
 * The thresholds a settle crossed: those with `before < line <= after`, less
 * those already fired in this window. A threshold re-arms when the spend is seen
 * under its line again (a rolling window whose old spend has aged out).
 * `fired` is the limit's set for its current window; it is updated in place.
 *
 * @since 0.1.0
 * @category utilities
 */
export const crossedThresholds = (
  thresholds: ReadonlyArray<number>,
  limitMicros: number,
  beforeMicros: number,
  afterMicros: number,
  fired: Set<number>
): ReadonlyArray<number> => {
  const crossed: Array<number> = []
  for (const threshold of thresholds) {
    const line = threshold * limitMicros
    if (beforeMicros < line) fired.delete(threshold)
    if (afterMicros >= line && beforeMicros < line && !fired.has(threshold)) {
      fired.add(threshold)
      crossed.push(threshold)
    }
  }
  return crossed
}

const applies = (limit: Limit, call: Call): boolean =>
  limit.scope._tag === "global" ||
  (limit.scope._tag === "tenant" ? call.tenant === limit.scope.id : call.job === limit.scope.id)

const tag = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>, tags: Record<string, string>) =>
  Object.entries(tags).reduce((tagged, [name, value]) => Metric.tagged(tagged, name, value), metric)

/**
 * Builds a budget over the `Pricing` and `BudgetLedger` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Budget["Type"], InvalidBudget, Pricing.Pricing | BudgetLedger> =>
  Effect.gen(function*() {
    const limits = yield* Either.mapLeft(
      Schema.decodeUnknownEither(Schema.Array(Limit), { errors: "all", onExcessProperty: "error" })(options.limits),
      (error) =>
        new InvalidBudget({
          issues: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
            path: ["limits", ...issue.path].map(String).join("."),
            message: issue.message
          }))
        })
    )
    for (const limit of limits) {
      if (typeof limit.window !== "string" && Duration.decodeUnknown(limit.window.rolling)._tag === "None") {
        return yield* new InvalidBudget({
          issues: [{
            path: "limits.window.rolling",
            message: `Expected a duration such as "24 hours", got ${JSON.stringify(limit.window.rolling)}`
          }]
        })
      }
    }
    const reservationTtlMs = Duration.toMillis(Duration.decode(options.reservationTtl ?? Duration.hours(1)))
    const pricing = yield* Pricing.Pricing
    const ledger = yield* BudgetLedger
    // Thresholds fired, per limit, in the window of `bucket` only: a new window starts empty,
    // so the map holds one small set per limit.
    const fired = new Map<number, { readonly bucket: string; readonly thresholds: Set<number> }>()
    // Reservation ids are unique across processes sharing a ledger: this budget's random
    // name (two draws of 53 bits), then a counter.
    const instance = (yield* Effect.all([Random.nextInt, Random.nextInt])).map((n) => n.toString(36)).join("")
    let counter = 0

    const report = (limit: Limit, index: number, bucket: string, beforeMicros: number, afterMicros: number) =>
      Effect.gen(function*() {
        const limitMicros = Pricing.fromUsd(limit.limitUsd)
        const scope = scopeName(limit.scope)
        const window = windowName(limit.window)
        yield* Metric.set(tag(spentUsd, { scope, window }), Pricing.toUsd(afterMicros))
        let current = fired.get(index)
        if (current === undefined || current.bucket !== bucket) {
          current = { bucket, thresholds: new Set() }
          fired.set(index, current)
        }
        for (
          const threshold of crossedThresholds(
            limit.thresholds ?? [0.5, 0.8, 1],
            limitMicros,
            beforeMicros,
            afterMicros,
            current.thresholds
          )
        ) {
          const event: ThresholdEvent = {
            scope,
            window,
            threshold,
            spentUsd: Pricing.toUsd(afterMicros),
            limitUsd: limit.limitUsd
          }
          yield* Effect.logWarning(
            `Sluice budget ${scope} (${window}) passed ${Math.round(threshold * 100)} %: $${
              event.spentUsd.toFixed(4)
            } of $${limit.limitUsd}`
          )
          yield* Metric.increment(tag(thresholdsCrossed, { scope, window, threshold: String(threshold) }))
          if (options.onThreshold !== undefined) yield* options.onThreshold(event)
        }
      })

    const reserve = (call: Call) =>
      Effect.gen(function*() {
        const price = yield* pricing.price(call.model)
        const worst = Pricing.worstCaseMicros(price, call)
        const now = yield* Clock.currentTimeMillis
        const active = limits.flatMap((limit, index) =>
          applies(limit, call) ? [{ limit, index, ...bucketOf(limit, index, now) }] : []
        )
        const id = `${instance}-${++counter}`
        const charges = active.map(({ bucket, counting, limit }) => ({
          bucket,
          counting,
          limitMicros: Pricing.fromUsd(limit.limitUsd),
          micros: worst
        }))
        let open = true
        const settle = (usage: LlmClient.Usage) =>
          Effect.gen(function*() {
            if (!open) return
            open = false
            const actual = Pricing.costMicros(price, usage)
            const at = yield* Clock.currentTimeMillis
            // One round trip, run to its end once started: an interrupt here must not leave the call
            // neither settled nor cancelled (it would hold until reservationTtl).
            const after = yield* Effect.uninterruptible(
              ledger.settle(id, active.map(({ bucket, counting }) => ({ bucket, counting, micros: actual })), at)
            )
            yield* Effect.forEach(
              active,
              ({ bucket, index, limit }, i) => report(limit, index, bucket, after[i]! - actual, after[i]!),
              { discard: true }
            )
          })
        const cancel = Effect.suspend(() => {
          if (!open) return Effect.void
          open = false
          return Effect.uninterruptible(ledger.cancel(id))
        })
        const reservation: Reservation = { reservedUsd: Pricing.toUsd(worst), settle, cancel }
        // The ledger's write and the hand-over of the reservation are one step for interruption:
        // the round trip runs uninterruptibly (an interrupt waits for its answer, bounded by the
        // ledger's own timeout), and an interrupt pending when it answers gives the reservation
        // back instead of dropping it. A reserve that failed may still have written (a reply lost
        // to a timeout): its id is cancelled, best effort.
        return yield* Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const answer = yield* ledger.reserve(id, charges, now, now + reservationTtlMs).pipe(
              Effect.tapError(() => Effect.ignore(ledger.cancel(id)))
            )
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
            return yield* restore(Effect.succeed(reservation)).pipe(Effect.onInterrupt(() => Effect.ignore(cancel)))
          })
        )
      }).pipe(Effect.withSpan("Budget.reserve", { attributes: { model: call.model }, captureStackTrace: false }))

    const status = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return yield* Effect.forEach(limits, (limit, index) => {
        const { bucket, counting } = bucketOf(limit, index, now)
        return Effect.map(ledger.usage(bucket, counting, now), (usage): Status => ({
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

/**
 * A budget over the `Pricing` and `BudgetLedger` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Budget, InvalidBudget, Pricing.Pricing | BudgetLedger> =>
  Layer.effect(Budget, make(options))
