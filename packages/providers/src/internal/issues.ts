/**
 * Option and file checks report one issue per path: this keeps the deepest.
 */

/** A problem with one field, named by its path (`quotas."anthropic/x".inputTokens.limit`). */
export interface Issue {
  readonly path: string
  readonly message: string
}

/**
 * One issue per path, the deepest: a union's members would otherwise each
 * report the same field, and a parent the failure of its child.
 */
export const deepest = (issues: ReadonlyArray<Issue>): ReadonlyArray<Issue> => {
  const byPath = new Map<string, string>()
  for (const issue of issues) if (!byPath.has(issue.path)) byPath.set(issue.path, issue.message)
  const paths = [...byPath.keys()]
  return paths
    .filter((path) => !paths.some((other) => other !== path && other.startsWith(`${path}.`)))
    .map((path) => ({ path, message: byPath.get(path)! }))
}
