/**
 * The environment variables through which a process could reach a paid
 * provider, and an environment without them.
 *
 * Not only the keys: the official SDKs read their endpoint, auth token,
 * organisation and workload-identity credentials from `ANTHROPIC_*` and
 * `OPENAI_*` variables whenever the code does not pass them (the Anthropic SDK
 * alone reads some twenty), so a whole prefix goes, and any `*_API_KEY` of
 * another vendor with it. The test setup (`vitest.config.ts`) strips them from
 * the test run, the CLI tests spawn children without them, and
 * `pnpm example:multi` starts its workers without them: those processes only
 * ever talk to the simulator, and nothing they inherit should change that.
 *
 * Plain functions with no imports: `vitest.config.ts` loads this before any
 * workspace package resolves.
 */

/** Prefixes of the variables the providers' SDKs read. */
export const providerPrefixes: ReadonlyArray<string> = ["ANTHROPIC_", "OPENAI_", "AZURE_OPENAI_"]

/** Whether a variable may name a provider's key, token or endpoint: a provider prefix, or a name ending in `_API_KEY` / `_AUTH_TOKEN`. */
export const isProviderVariable = (name: string): boolean => {
  const upper = name.toUpperCase()
  return providerPrefixes.some((prefix) => upper.startsWith(prefix)) || upper.endsWith("_API_KEY") ||
    upper.endsWith("_AUTH_TOKEN")
}

/**
 * A copy of `env` without the provider variables (and without unset entries),
 * for a child process.
 *
 * @example
 * ```ts
 * spawn(process.execPath, args, { env: { ...withoutProviderVariables(process.env), WORKER: "1" } })
 * ```
 */
export const withoutProviderVariables = (env: Readonly<Record<string, string | undefined>>): Record<string, string> => {
  const kept: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !isProviderVariable(name)) kept[name] = value
  }
  return kept
}

/** Deletes the provider variables from `env` in place (the test run's own `process.env`); returns the names removed. */
export const deleteProviderVariables = (env: Record<string, string | undefined>): ReadonlyArray<string> => {
  const removed = Object.keys(env).filter(isProviderVariable)
  for (const name of removed) delete env[name]
  return removed
}
