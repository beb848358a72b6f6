/**
 * What the Promise facades (`Promise.ts`, `PromiseOpenAi.ts`) share for
 * streamed calls: a governed `Stream` pulled one element at a time from a
 * Promise, its scope closed exactly once — at the end, on a failure, when the
 * consumer stops early (`return()`), or when its signal aborts.
 *
 * These modules are the edge for code without Effect: the one place a governed
 * stream becomes an async iterator, and a governed call a Promise. The runtime calls
 * here (`runPromise`, `runPromiseExit`, `runSync`) must stay: a Promise caller has
 * no fiber to run them in; everything they run is Effect, on the client's runtime.
 */
import { Budget, RateLimiter } from "@sluice/core"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * A facade's runtime as Promises: `run` resolves with an effect's value or
 * rejects with `toError` of its failure (an interruption by the caller's signal
 * or a defect rejects with the cause as it is); after `close()` every call
 * rejects with `closedError()`. `close` disposes of the runtime once.
 */
export interface Runner<E, R> {
  readonly run: <A>(effect: Effect.Effect<A, E, R>, signal: AbortSignal | undefined) => Promise<A>
  readonly ensureOpen: () => void
  readonly close: () => Promise<void>
}

/** The {@link Runner} of `runtime`. */
export const runner = <E, R, ER>(
  runtime: ManagedRuntime.ManagedRuntime<R, ER>,
  toError: (error: E | ER) => unknown,
  closedError: () => unknown
): Runner<E, R> => {
  let closed: Promise<void> | undefined
  const ensureOpen = () => {
    if (closed !== undefined) throw closedError()
  }
  return {
    ensureOpen,
    run: async (effect, signal) => {
      ensureOpen()
      const exit = await runtime.runPromiseExit(effect, signal === undefined ? {} : { signal })
      if (Exit.isSuccess(exit)) return exit.value
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) throw toError(failure.value)
      // An interruption (the caller's signal) or a defect: the SDK's own abort error, or the defect as it is.
      throw Cause.squash(exit.cause)
    },
    close: () => {
      closed ??= runtime.dispose()
      return closed
    }
  }
}

/** What both facades answer besides calls: a key's limiter state and the budget's status. */
export const status = <E>(
  { run }: Runner<E, RateLimiter.RateLimiter>,
  keyOf: (model: string) => string
) => ({
  stats: (model: string): Promise<RateLimiter.KeyStats> =>
    run(Effect.flatMap(RateLimiter.RateLimiter, (limiter) => Effect.orDie(limiter.stats(keyOf(model)))), undefined),
  budget: (): Promise<ReadonlyArray<Budget.Status>> =>
    run(
      Effect.flatMap(
        Effect.serviceOption(Budget.Budget),
        Option.match({ onNone: () => Effect.succeed([]), onSome: (budget) => Effect.orDie(budget.status) })
      ),
      undefined
    )
})

/** A call's `tenant` and `job` over the client's defaults (the call's win). */
export const withDefaults = <C extends { readonly tenant?: string | undefined; readonly job?: string | undefined }>(
  defaults: { readonly tenant?: string | undefined; readonly job?: string | undefined },
  call: C
): C => ({
  ...(defaults.tenant === undefined ? {} : { tenant: defaults.tenant }),
  ...(defaults.job === undefined ? {} : { job: defaults.job }),
  ...call
})

/** A pulled stream: `next` as an async iterator's, `close` releases it (idempotent). */
export interface Pull<A> {
  readonly next: () => Promise<IteratorResult<A, undefined>>
  readonly close: () => Promise<void>
}

/**
 * Pulls `stream` on `runtime`. A failure rejects `next` with `toError(error)`;
 * an abort of `signal` ends the iteration (`done`) and releases the stream,
 * whether a pull is waiting or not, as the SDKs' streams end when aborted.
 */
export const pull = <A, E, R, ER>(
  runtime: ManagedRuntime.ManagedRuntime<R, ER>,
  stream: Stream.Stream<A, E, R>,
  toError: (error: E | ER) => unknown,
  signal: AbortSignal
): Pull<A> => {
  // A scope of its own: the stream's resources (the admission's permit and
  // reservation, the HTTP response) live until `close`, not until one pull ends.
  // Made synchronously here, at the Promise edge (the caller's async iterator has
  // no fiber to make it in); nothing in it reads Clock, Random or Config.
  const scope = Effect.runSync(Scope.make())
  let puller: Effect.Effect<Chunk.Chunk<A>, Option.Option<E>, R> | undefined
  let buffer: Array<A> = []
  let done = false
  let inFlight = false
  let closed: Promise<void> | undefined

  const close = (): Promise<void> => {
    done = true
    signal.removeEventListener("abort", onAbort)
    closed ??= runtime.runPromise(Scope.close(scope, Exit.void))
    return closed
  }
  function onAbort() {
    // A pull in flight is interrupted by the signal, and its `next` closes the scope.
    if (!inFlight) void close()
  }
  signal.addEventListener("abort", onAbort, { once: true })

  const pullOnce = async (): Promise<Exit.Exit<Chunk.Chunk<A>, Option.Option<E> | ER>> => {
    inFlight = true
    try {
      puller ??= await runtime.runPromise(Scope.extend(Stream.toPull(stream), scope))
      return await runtime.runPromiseExit(puller, { signal })
    } finally {
      inFlight = false
    }
  }

  const next = async (): Promise<IteratorResult<A, undefined>> => {
    while (buffer.length === 0) {
      if (done || signal.aborted) {
        await close()
        return { done: true, value: undefined }
      }
      const exit = await pullOnce()
      if (Exit.isSuccess(exit)) {
        buffer = Chunk.toArray(exit.value)
        continue
      }
      await close()
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        // `None` is the stream's end; anything not an `Option` is the runtime's layer failing to build.
        if (!Option.isOption(failure.value)) throw toError(failure.value)
        if (Option.isNone(failure.value)) return { done: true, value: undefined }
        throw toError(failure.value.value)
      }
      // Interrupted by the signal: the iteration ends, as an aborted SDK stream's does.
      if (signal.aborted) return { done: true, value: undefined }
      throw Cause.squash(exit.cause)
    }
    return { done: false, value: buffer.shift()! }
  }

  return { next, close }
}

/**
 * An SDK-like stream of a governed call: iterable once, with the
 * `controller` whose `abort()` stops it (and the HTTP response) and releases
 * its admission. Breaking out of `for await` releases it too.
 */
export class GovernedStream<T> implements AsyncIterable<T> {
  readonly controller: AbortController
  readonly #pull: Pull<T>
  #pending: IteratorResult<T, undefined> | undefined
  #consumed = false

  constructor(open: (signal: AbortSignal) => Pull<T>, controller: AbortController = new AbortController()) {
    this.controller = controller
    this.#pull = open(controller.signal)
  }

  /** Pulls the first element ahead: the call is admitted (or refused) before the caller's promise settles. */
  async prime(): Promise<this> {
    this.#pending = await this.#pull.next()
    return this
  }

  [Symbol.asyncIterator](): AsyncIterator<T, undefined> {
    if (this.#consumed) throw new Error("Cannot iterate over a consumed stream")
    this.#consumed = true
    return {
      next: () => {
        const pending = this.#pending
        this.#pending = undefined
        return pending === undefined ? this.#pull.next() : Promise.resolve(pending)
      },
      return: async () => {
        await this.#pull.close()
        return { done: true, value: undefined }
      }
    }
  }
}
