import { defineConfig } from "vitest/config"
import base from "./vitest.config.js"

// The README's commands (tests/readme): minutes of real processes, run by `pnpm test:readme`
// and by .ci/run after the main suite, never by `pnpm test`.
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ["tests/readme/**/*.test.ts"],
    exclude: ["**/node_modules/**"],
    testTimeout: 600_000
  }
})
