/**
 * Quota keys as people write them, and a limiter that says when a key has no quota.
 *
 * The Governor keys a call `provider/model` (`anthropic/claude-haiku-4-5`, or
 * `simulator/claude-haiku-4-5` on the in-process simulator), the Promise facade
 * takes quotas by the bare model name. A quota written under another spelling
 * than the key a call uses used to be ignored in silence: the key ran one call
 * at a time until a response's headers stated its limits, forever against a
 * server that sends none (vLLM, Ollama, most gateways).
 *
 * Here a quota is found under either spelling: the key itself, or, for a key
 * `provider/model`, the bare `model` (everything after the first `/`), which
 * then applies to that model on every provider, each key with its own buckets.
 * The limiter of {@link wrap} defines the quota on the key the first time a
 * call uses it, logs once per key when a call uses a key with no quota (naming
 * the configured keys), and warns once per key when a response on it carries
 * no rate-limit headers.
 *
 * @example
 * ```ts
 * import { QuotaKeys } from "@sluice/core"
 *
 * // one quota for claude-haiku-4-5 on Anthropic, on the simulator, behind the Promise facade
 * const LimiterLive = QuotaKeys.layerMemory({
 *   quotas: { "claude-haiku-4-5": { requests: { limit: 50, per: "1 minute" } } }
 * })
 * QuotaKeys.lookup(["claude-haiku-4-5"], "simulator/claude-haiku-4-5") // "claude-haiku-4-5"
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as LimiterStore from "./LimiterStore.js"
import * as Quota from "./Quota.js"
import * as RateLimiter from "./RateLimiter.js"
import type { RateLimitSnapshot } from "./RateLimitSnapshot.js"

/**
 * The names a quota for `key` may be written under, the key itself first: for
 * `provider/model`, the bare `model` (everything after the first `/`).
 *
 * @example
 * ```ts
 * import { QuotaKeys } from "@sluice/core"
 *
 * QuotaKeys.spellings("anthropic/claude-haiku-4-5") // ["anthropic/claude-haiku-4-5", "claude-haiku-4-5"]
 * QuotaKeys.spellings("claude-haiku-4-5") // ["claude-haiku-4-5"]
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const spellings = (key: string): ReadonlyArray<string> => {
  const slash = key.indexOf("/")
  return slash <= 0 || slash === key.length - 1 ? [key] : [key, key.slice(slash + 1)]
}

/**
 * The configured name whose quota applies to `key`: the key itself, else its
 * bare model; undefined when neither is configured.
 *
 * @since 0.1.0
 * @category utilities
 */
export const lookup = (configured: Iterable<string>, key: string): string | undefined => {
  const names = configured instanceof Set ? configured as ReadonlySet<string> : new Set(configured)
  return spellings(key).find((name) => names.has(name))
}

/**
 * Whether a snapshot states any limit: a `limit` or a `remaining` in some dimension.
 *
 * @since 0.1.0
 * @category utilities
 */
export const statesLimits = (snapshot: RateLimitSnapshot): boolean =>
  Object.values(snapshot.dimensions).some((state) => state?.limit !== undefined || state?.remaining !== undefined)

/**
 * Options of {@link wrap}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The configured quotas, by key or bare model. */
  readonly quotas?: { readonly [name: string]: Quota.QuotaInput } | undefined
  /** Whether the limiter discovers unknown keys (`RateLimiter.Options.discover`): only changes what the log says. Default true. */
  readonly discover?: boolean | undefined
  /**
   * How many keys are remembered for the once-per-key logs; past it, new keys
   * are not logged (a per-tenant key per user would otherwise grow the sets
   * without end). Default 10,000.
   */
  readonly maxLoggedKeys?: number | undefined
}

const quoted = (names: Iterable<string>): string => {
  const all = [...names].map((name) => `"${name}"`)
  return all.length === 0 ? "none" : all.join(", ")
}

/**
 * A limiter over `limiter` that finds a key's quota under either spelling
 * ({@link lookup}) and defines it on the key the first time a call uses it;
 * logs once per key (a warning) when a call uses a key with no quota, naming
 * the configured keys; and warns once per key when a response on it carries
 * no rate-limit headers (the key then stays at one call at a time when it has
 * no quota, or is held to its configured quota alone). Every other method
 * passes through. Fails with `InvalidQuota` when a configured quota is wrong.
 *
 * @since 0.1.0
 * @category constructors
 */
export const wrap = (
  limiter: RateLimiter.RateLimiter["Type"],
  options: Options = {}
): Effect.Effect<RateLimiter.RateLimiter["Type"], Quota.InvalidQuota> =>
  Effect.gen(function*() {
    const configured = new Map<string, Quota.QuotaInput>()
    for (const [name, quota] of Object.entries(options.quotas ?? {})) {
      yield* Quota.decode(quota, name)
      configured.set(name, quota)
    }
    const discover = options.discover ?? true
    const maxLogged = options.maxLoggedKeys ?? 10_000
    /** Keys whose quota was found under the bare model and defined on them. */
    const aliased = new Set<string>()
    const lock = yield* Effect.makeSemaphore(1)
    /** Keys logged as having no quota. */
    const unquoted = new Set<string>()
    /** Keys whose responses stated limits, or were warned about for stating none. */
    const heard = new Set<string>()

    const configuredNames = () => [...configured.keys()].filter((name) => !aliased.has(name))

    /** Before a call on `key`: its quota defined when written under the bare model; a log when it has none. */
    const prepare = (key: string): Effect.Effect<void, LimiterStore.LimiterStoreError> => {
      const name = lookup(configured.keys(), key)
      if (name === key || aliased.has(key)) return Effect.void
      if (name !== undefined) {
        return lock.withPermits(1)(Effect.suspend(() => {
          if (aliased.has(key)) return Effect.void
          return limiter.define(key, configured.get(name)!).pipe(
            // Every configured quota was decoded above.
            Effect.catchTag("InvalidQuota", Effect.die),
            Effect.zipRight(Effect.sync(() => void aliased.add(key))),
            Effect.zipRight(Effect.logDebug(`Sluice: key "${key}" takes the quota configured as "${name}"`))
          )
        }))
      }
      if (unquoted.has(key) || unquoted.size >= maxLogged) return Effect.void
      unquoted.add(key)
      return Effect.logWarning(
        `Sluice: no quota for key "${key}"; configured keys: ${quoted(configuredNames())}. ` +
          (discover
            ? "It runs one call at a time until a response's headers state its limits. "
            : "Its calls fail with UnknownKey (discovery is off). ") +
          `A quota applies when written under the key or its bare model (${quoted(spellings(key))}).`
      )
    }

    const observe = (key: string, snapshot: RateLimitSnapshot) =>
      Effect.zipRight(
        Effect.suspend(() => {
          if (heard.has(key)) return Effect.void
          if (statesLimits(snapshot)) {
            if (heard.size < maxLogged) heard.add(key)
            return Effect.void
          }
          if (heard.size >= maxLogged) return Effect.void
          heard.add(key)
          const hasQuota = lookup(configured.keys(), key) !== undefined || aliased.has(key)
          return Effect.logWarning(
            hasQuota
              ? `Sluice: responses on key "${key}" carry no rate-limit headers: the key is held to its configured quota alone, ` +
                "and what other clients of the same quota use goes unseen."
              : `Sluice: responses on key "${key}" carry no rate-limit headers and the key has no quota: ` +
                `it stays at one call at a time. Configure a quota for it (configured keys: ${
                  quoted(configuredNames())
                }).`
          )
        }),
        limiter.observe(key, snapshot)
      )

    const acquire: RateLimiter.RateLimiter["Type"]["acquire"] = (key, cost, acquireOptions) =>
      Effect.zipRight(prepare(key), limiter.acquire(key, cost, acquireOptions))

    return RateLimiter.RateLimiter.of({
      ...limiter,
      acquire,
      withPermit: (key, cost, use, acquireOptions) =>
        Effect.scoped(Effect.flatMap(acquire(key, cost, acquireOptions), use)),
      admitsIn: (key, cost, acquireOptions) =>
        Effect.zipRight(prepare(key), limiter.admitsIn(key, cost, acquireOptions)),
      take: (key, cost, acquireOptions) => Effect.zipRight(prepare(key), limiter.take(key, cost, acquireOptions)),
      define: (key, quota) =>
        Effect.zipRight(
          limiter.define(key, quota),
          Effect.sync(() => {
            configured.set(key, quota)
            aliased.delete(key)
          })
        ),
      observe
    })
  })

/**
 * A limiter over the `LimiterStore` in context with its quotas under either
 * spelling and the once-per-key logs of {@link wrap}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: RateLimiter.Options & Pick<Options, "maxLoggedKeys"> = {}
): Layer.Layer<
  RateLimiter.RateLimiter,
  Quota.InvalidQuota | LimiterStore.LimiterStoreError,
  LimiterStore.LimiterStore
> => Layer.scoped(RateLimiter.RateLimiter, make(options))

/**
 * {@link layer} with its own in-memory store: one process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (
  options: RateLimiter.Options & Pick<Options, "maxLoggedKeys"> = {}
): Layer.Layer<RateLimiter.RateLimiter, Quota.InvalidQuota> =>
  layer(options).pipe(
    Layer.provide(LimiterStore.layerMemory),
    // The memory store never fails.
    Layer.catchAll((error) => error._tag === "InvalidQuota" ? Layer.fail(error) : Layer.die(error))
  )

/**
 * Builds `RateLimiter.make(options)` and {@link wrap}s it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: RateLimiter.Options & Pick<Options, "maxLoggedKeys"> = {}
): Effect.Effect<
  RateLimiter.RateLimiter["Type"],
  Quota.InvalidQuota | LimiterStore.LimiterStoreError,
  LimiterStore.LimiterStore | Scope.Scope
> =>
  Effect.flatMap(RateLimiter.make(options), (limiter) =>
    wrap(limiter, {
      quotas: options.quotas,
      discover: options.discover,
      maxLoggedKeys: options.maxLoggedKeys
    }))
