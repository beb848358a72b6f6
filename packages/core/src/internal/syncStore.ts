/**
 * The synchronous face of a store that lives in this process (the memory
 * store): `reserve` and `adjust` as plain functions of the caller's clock
 * reading, so the limiter's uncontended path is one synchronous step instead
 * of a chain of effects.
 *
 * A store registers it against its service object, and the limiter asks by
 * identity. A wrapper around a store (a spread copy that counts or fails
 * calls, a test double) is another object and is not found, so its calls keep
 * going through the `LimiterStore` interface it overrides. The interface
 * itself is unchanged: a store that registers nothing (Redis) is used as before.
 */
import type * as Cost from "../Cost.js"
import type * as LimiterStore from "../LimiterStore.js"

/**
 * `LimiterStore`'s `reserve` and `adjust`, each one atomic synchronous step at
 * `now` (the caller's `Clock`), answering no levels: the uncontended path reads
 * none, and the limiter's periodic refresh asks `levels` for its gauges.
 */
export interface SyncStore {
  /** Takes `amounts` from every bucket: true; or nothing, with the store's answer. */
  readonly reserve: (
    key: string,
    amounts: Cost.Amounts,
    headroom: number,
    margin: number,
    now: number
  ) => true | Exclude<LimiterStore.Reservation, { readonly _tag: "Granted" }>
  /** Charges (positive) or refunds (negative) each dimension. */
  readonly adjust: (key: string, delta: Cost.Delta, now: number) => void
  /** A key's levels now; not a use of the key (as `state`). */
  readonly levels: (key: string, now: number) => LimiterStore.Levels
}

const registered = new WeakMap<object, SyncStore>()

/** Registers `sync` as the synchronous face of `store`; answers `store`. */
export const register = <S extends object>(store: S, sync: SyncStore): S => {
  registered.set(store, sync)
  return store
}

/** The synchronous face of this very store object, if it has one. */
export const of = (store: object): SyncStore | undefined => registered.get(store)
