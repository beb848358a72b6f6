/**
 * A model ladder: when a model is rate limited, overloaded, or its breaker is
 * open, the call moves to the next rung (say Opus → Sonnet → Haiku), each rung
 * with its own quota key. The response says which model answered; when every
 * rung fails, {@link AllRungsFailed} lists each rung's reason.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fallback, LlmClient } from "@sluice/core"
 *
 * const ask = (request: LlmClient.Request) =>
 *   Effect.gen(function*() {
 *     const client = yield* LlmClient.LlmClient
 *     return yield* Fallback.ladder(
 *       [{ model: "claude-opus-4-1" }, { model: "claude-sonnet-4-5" }],
 *       (rung) => client.complete({ ...request, model: rung.model })
 *     )
 *   })
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as SluiceError from "./SluiceError.js"
import { AllRungsFailed } from "./SluiceError.js"

/**
 * One rung: a model, and the quota key its calls count against (derived from the model when absent).
 *
 * @since 0.1.0
 * @category models
 */
export interface Rung {
  readonly model: string
  readonly key?: string | undefined
}

// Defined in `SluiceError` with every error a call can fail with; named here as the ladder's.
export {
  /**
   * @since 0.1.0
   * @category errors
   */
  AllRungsFailed
} from "./SluiceError.js"

/**
 * The errors that move a call to the next rung: `RateLimited`, `Overloaded`,
 * `CircuitOpen`. `QuotaExhausted` is not one: the account is out of money for
 * every model, so the next rung would fail the same way after another request.
 * `SluiceError.classify(error).fallback`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isFallbackError = (error: unknown): boolean => SluiceError.classify(error).fallback

/**
 * Tries `attempt` on each rung in order. An error for which `fallsBack` holds
 * moves on to the next rung; any other error fails the call at once. When the
 * last rung falls back too, the call fails with {@link AllRungsFailed}. Each
 * fallen rung is pushed onto `tried` (pass your own array to read them after).
 *
 * @since 0.1.0
 * @category utilities
 */
export const ladder = <A, E, R>(
  rungs: ReadonlyArray<Rung>,
  attempt: (rung: Rung, index: number) => Effect.Effect<A, E, R>,
  fallsBack: (error: E, index: number) => boolean = isFallbackError,
  tried: Array<{ readonly model: string; readonly key: string | undefined; readonly error: unknown }> = []
): Effect.Effect<A, E | AllRungsFailed, R> => {
  const step = (index: number): Effect.Effect<A, E | AllRungsFailed, R> => {
    const rung = rungs[index]
    if (rung === undefined) return Effect.fail(new AllRungsFailed({ attempts: [...tried] }))
    return Effect.catchAll(attempt(rung, index), (error): Effect.Effect<A, E | AllRungsFailed, R> => {
      if (!fallsBack(error, index)) return Effect.fail(error)
      tried.push({ model: rung.model, key: rung.key, error })
      return Effect.zipRight(
        Effect.logWarning(
          `Sluice fell back from ${rung.model}: ${Predicate.hasProperty(error, "_tag") ? String(error._tag) : "error"}`
        ),
        step(index + 1)
      )
    })
  }
  return Effect.suspend(() => step(0))
}
