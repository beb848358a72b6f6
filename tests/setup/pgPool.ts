/**
 * Import this before `@effect/sql-pg` in a test file. vitest.config.ts hands its resolve
 * conditions, "import" among them, to Node (--conditions), so `pg`'s require("pg-pool") gets
 * pg-pool's ES module, which `pg` cannot extend. Until the config passes only "@sluice/source"
 * to Node, this loads pg-pool's CommonJS build under the name it resolves to.
 */
import { createRequire } from "node:module"
import { dirname, join } from "node:path"

const require = createRequire(createRequire(import.meta.url).resolve("@effect/sql-pg"))
const fromPg = createRequire(require.resolve("pg"))
const resolved = fromPg.resolve("pg-pool")
if (resolved.endsWith(".mjs")) {
  const commonJs = join(dirname(resolved), "..", "index.js")
  fromPg(commonJs)
  fromPg.cache[resolved] = fromPg.cache[commonJs]
}
