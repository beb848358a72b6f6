/**
 * Coalescing: identical requests in flight at the same moment share one call
 * (and are charged once); an optional response cache with a time to live can
 * answer while a breaker is open.
 *
 * Requests are identical when their canonical JSON (keys sorted) is equal,
 * and so is everything of their `metadata` that governs them: the tenant (its
 * quota and budget), the job (its budget) and the priority class. A call of
 * tenant B never joins tenant A's call, nor is answered from A's cache: B's
 * budget and quota would never be consulted. The document id and the sticky
 * key do not govern a call and are left out. That string is the key, so there
 * are no hash collisions.
 *
 * A request's `native` body is left out too: it is opaque to core (it may hold
 * megabytes of images, or values JSON cannot write), and the key is what Sluice
 * reads of a call. A client whose native bodies may differ where their
 * translations agree must not coalesce; the Promise facade turns it off.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as LlmClient from "./LlmClient.js"

/**
 * Calls that joined another identical call in flight instead of calling.
 *
 * @since 0.1.0
 * @category utilities
 */
export const coalesced = Metric.counter("sluice_coalesced_total", {
  description: "Calls answered by an identical call already in flight",
  incremental: true
})

/**
 * Calls answered from the response cache.
 *
 * @since 0.1.0
 * @category utilities
 */
export const cacheHits = Metric.counter("sluice_cache_hits_total", {
  description: "Calls answered from the response cache",
  incremental: true
})

const canonical = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(canonical)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.keys(value).sort().map((key) => [key, canonical((value as Record<string, unknown>)[key])])
    )
  }
  return value
}

/**
 * The canonical form of a request: what makes two requests identical.
 *
 * @since 0.1.0
 * @category utilities
 */
export const requestKey = (request: LlmClient.Request): string => {
  // `native` is left out on purpose (see the module's doc).
  const { metadata, native: _native, ...rest } = request
  const governance: Record<string, string> = {}
  if (metadata?.tenant !== undefined) governance.tenant = metadata.tenant
  if (metadata?.job !== undefined) governance.job = metadata.job
  if (metadata?.priority !== undefined) governance.priority = metadata.priority
  return JSON.stringify(canonical(Object.keys(governance).length === 0 ? rest : { ...rest, governance }))
}

/**
 * Options of a coalescer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Keep successful responses this long, to answer when the provider cannot (an open breaker). Off when absent. */
  readonly cacheTtl?: Duration.DurationInput | undefined
  /** At most this many cached responses; the oldest goes first. Default 1,000. */
  readonly cacheSize?: number | undefined
}

/**
 * A coalescer over responses of type `A`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Coalescer<A> {
  /** Runs `call`, unless an identical request is in flight: then its result is shared. */
  readonly run: <E, R>(request: LlmClient.Request, call: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** A fresh cached response for the request, if there is one. */
  readonly cached: (request: LlmClient.Request) => Effect.Effect<Option.Option<A>>
}

/** A call in flight, and the Deferred its followers wait on once there is one. */
interface InFlight<A> {
  deferred: Deferred.Deferred<A, unknown> | undefined
}

/**
 * Builds a coalescer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A>(options: Options = {}): Effect.Effect<Coalescer<A>> =>
  Effect.sync(() => {
    const inFlight = new Map<string, InFlight<A>>()
    const cache = new Map<string, { readonly value: A; readonly expiresAt: number }>()
    const ttl = options.cacheTtl === undefined ? undefined : Duration.toMillis(options.cacheTtl)
    const cacheSize = options.cacheSize ?? 1_000

    const remember = (key: string, value: A) =>
      ttl === undefined
        ? Effect.void
        : Effect.map(Clock.currentTimeMillis, (now) => {
          cache.delete(key)
          cache.set(key, { value, expiresAt: now + ttl })
          if (cache.size > cacheSize) cache.delete(cache.keys().next().value!)
        })

    const run = <E, R>(request: LlmClient.Request, call: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.suspend(() => {
        const key = requestKey(request)
        const existing = inFlight.get(key)
        if (existing !== undefined) {
          // The first follower makes the leader's Deferred: most calls have no twin, and do without one.
          const deferred = existing.deferred ??= Deferred.unsafeMake<A, unknown>(undefined as never)
          return Effect.zipRight(
            Metric.increment(coalesced),
            // The leader was interrupted: its followers call for themselves.
            Effect.catchAllCause(Deferred.await(deferred as Deferred.Deferred<A, E>), (cause) =>
              Exit.isInterrupted(Exit.failCause(cause)) ? run(request, call) : Effect.failCause(cause))
          )
        }
        const entry: InFlight<A> = { deferred: undefined }
        inFlight.set(key, entry)
        const settled = call.pipe(
          Effect.onExit((exit) =>
            Effect.suspend(() => {
              inFlight.delete(key)
              return entry.deferred === undefined ? Effect.void : Deferred.done(entry.deferred, exit)
            })
          )
        )
        return ttl === undefined ? settled : Effect.tap(settled, (value) =>
          remember(key, value))
      })

    const cached = (request: LlmClient.Request) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = cache.get(requestKey(request))
        return entry !== undefined && entry.expiresAt > now ? Option.some(entry.value) : Option.none()
      }).pipe(Effect.tap((hit) => Option.isSome(hit) ? Metric.increment(cacheHits) : Effect.void))

    return { run, cached }
  })
