import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"
import { deleteProviderVariables } from "./packages/examples/src/providerEnv.js"

// No test may reach a paid API: provider keys, tokens and endpoints (every ANTHROPIC_*, OPENAI_*,
// AZURE_OPENAI_*, *_API_KEY and *_AUTH_TOKEN variable) are deleted here, in the main process, before the workers
// fork, so the workers and every process they spawn inherit an environment without them. A test
// that needs a key gives one through a ConfigProvider or a child's explicit env, never the shell's.
deleteProviderVariables(process.env)

// Workspace packages resolve to their TypeScript sources through the
// "@sluice/source" export condition (the same one tsconfig.base.json uses), so
// tests never need a build. No "module" condition: vitest hands these to Node
// for external packages, and a "module" build meant for bundlers (OpenTelemetry's,
// with extension-less imports) cannot load there.
const conditions = ["@sluice/source", "node", "import", "default"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ["tests/**/*.test.ts"],
    // Starts a Redis server for the run when none answers at REDIS_URL; fails the run when no
    // PostgreSQL answers at DATABASE_URL / PG_URL (.ci/run starts one).
    globalSetup: ["tests/setup/redis.ts", "tests/setup/postgres.ts"],
    // tests/readme runs the README's commands (minutes of real processes): `pnpm test:readme`.
    exclude: ["**/node_modules/**", "tests/readme/**"],
    // Generous: a TestClock test that takes 12 s on an idle two-core machine took over 30 s with the other core busy.
    testTimeout: 60_000,
    hookTimeout: 30_000,
    sequence: { concurrent: false },
    // Twice as many workers as cores: a worker under TestClock spends most of its time idle (each
    // TestClock wakeup yields to the event loop through a timer), so two per core overlap that idle
    // time. On two cores this took the suite from about 100 s to about 64 s.
    maxWorkers: Math.max(2, 2 * availableParallelism()),
    minWorkers: 1,
    // .ci/run sets SLUICE_TEST_REPORT to collect vitest's JSON summary for its count.
    reporters: process.env.SLUICE_TEST_REPORT
      ? ["default", ["json", { outputFile: process.env.SLUICE_TEST_REPORT }]]
      : ["default"]
  }
})
