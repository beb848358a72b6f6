/**
 * What `@sluice/providers` costs a client to load: no HTTP server and no CLI.
 * The simulator, which needs both, is its own package (`@sluice/simulator`), a
 * dependency of the tests and examples, never of the providers. Loading is
 * probed in a fresh child process, so that nothing the test runner loaded
 * counts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { join, resolve } from "node:path"

const root = resolve(__dirname, "../..")

/** Which of `node:http` and `node:https` importing `specifier` loads, as a fresh child process reports them. */
const serverModulesLoadedBy = (specifier: string) =>
  Effect.async<ReadonlyArray<string>, Error>((resume) => {
    const probe = `await import(${JSON.stringify(specifier)}); ` +
      `console.log(JSON.stringify(process.moduleLoadList.filter((m) => /^NativeModule (http|https)$/.test(m))))`
    const child = execFile(
      process.execPath,
      ["--import", "tsx", "--conditions=@sluice/source", "--input-type=module", "-e", probe],
      { cwd: root },
      (error, stdout, stderr) =>
        resume(
          error === null
            ? Effect.succeed(JSON.parse(stdout.trim().split("\n").pop()!))
            : Effect.fail(new Error(`${error.message}\n${stderr}`))
        )
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const manifest = (name: string) =>
  JSON.parse(readFileSync(join(root, "packages", name, "package.json"), "utf8")) as {
    readonly dependencies?: Record<string, string>
    readonly peerDependencies?: Record<string, string>
  }

describe("@sluice/providers as a dependency", () => {
  it.effect("importing its root loads no HTTP server module (node:http, node:https)", () =>
    Effect.gen(function*() {
      expect(yield* serverModulesLoadedBy("@sluice/providers")).toEqual([])
    }))

  it.effect("the probe sees node:http when it is loaded: importing @sluice/simulator loads it", () =>
    Effect.gen(function*() {
      expect(yield* serverModulesLoadedBy("@sluice/simulator")).toContain("NativeModule http")
    }))

  it("depends at run time on neither @effect/cli, @effect/platform-node nor the simulator", () => {
    const { dependencies = {}, peerDependencies = {} } = manifest("providers")
    for (const name of ["@effect/cli", "@effect/platform-node", "@sluice/simulator"]) {
      expect(dependencies).not.toHaveProperty([name])
      expect(peerDependencies).not.toHaveProperty([name])
    }
  })
})
