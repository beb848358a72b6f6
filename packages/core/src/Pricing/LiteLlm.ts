/**
 * Pricing from a LiteLLM `model_prices_and_context_window.json` file, read
 * through `@effect/platform`'s `FileSystem` and merged over the default table
 * (or yours). `@effect/platform` is an optional peer dependency of
 * `@sluice/core`: only the modules that read files or serve HTTP need it, so
 * this one is reached by its own subpath.
 *
 * @example
 * ```ts
 * import { NodeFileSystem } from "@effect/platform-node"
 * import * as PricingLiteLlm from "@sluice/core/Pricing/LiteLlm"
 * import { Layer } from "effect"
 *
 * const PricingLive = PricingLiteLlm.layerFile("./model_prices_and_context_window.json").pipe(
 *   Layer.provide(NodeFileSystem.layer)
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Pricing from "../Pricing.js"

/**
 * The price table of a LiteLLM price file merged over a table (the default one
 * when absent). A file that cannot be read or is not JSON is an
 * `InvalidPriceTable` naming the path; wrong entries name the model and field.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readFile = (
  path: string,
  base: Pricing.PriceTable = Pricing.defaultTable
): Effect.Effect<Pricing.PriceTable, Pricing.InvalidPriceTable, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((error) =>
        new Pricing.InvalidPriceTable({ issues: [{ path, message: `cannot be read: ${error.message}` }] })
      )
    )
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (error) => new Pricing.InvalidPriceTable({ issues: [{ path, message: `is not JSON: ${String(error)}` }] })
    })
    return yield* Pricing.mergeLiteLlm(json, base)
  })

/**
 * Pricing from a LiteLLM price file merged over a table (the default one when absent).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFile = (
  path: string,
  base: Pricing.PriceTable = Pricing.defaultTable
): Layer.Layer<Pricing.Pricing, Pricing.InvalidPriceTable, FileSystem.FileSystem> =>
  Layer.effect(Pricing.Pricing, Effect.flatMap(readFile(path, base), (table) => Pricing.make(table)))
