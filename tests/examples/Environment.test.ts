/**
 * The test run itself holds no provider key, token or endpoint: `vitest.config.ts`
 * deletes them before the workers start, so no test can reach a paid API by
 * accident, whatever the shell that ran `pnpm test` had set.
 */
import { describe, expect, it } from "@effect/vitest"
import { isProviderVariable, withoutProviderVariables } from "@sluice/examples/providerEnv"

describe("the test environment", () => {
  it("holds no provider key or endpoint in process.env", () => {
    expect(Object.keys(process.env).filter(isProviderVariable)).toEqual([])
  })

  it("a provider variable is any ANTHROPIC_/OPENAI_/AZURE_OPENAI_ name or any *_API_KEY / *_AUTH_TOKEN", () => {
    for (
      const name of [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "AZURE_OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "MISTRAL_API_KEY",
        "openai_api_key"
      ]
    ) {
      expect(isProviderVariable(name), name).toBe(true)
    }
    for (const name of ["PATH", "HOME", "REDIS_URL", "NODE_OPTIONS", "SLUICE_TEST_REPORT"]) {
      expect(isProviderVariable(name), name).toBe(false)
    }
    expect(
      withoutProviderVariables({
        PATH: "/bin",
        ANTHROPIC_API_KEY: "sk-test",
        OPENAI_BASE_URL: "https://x",
        EMPTY: undefined
      })
    ).toEqual({ PATH: "/bin" })
  })
})
