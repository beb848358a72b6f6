#!/usr/bin/env bash
# The API reference of the published packages, built with @effect/docgen (`pnpm docgen`).
#
# For each of core, providers and simulator: parse src/ (every export needs `@since`; src/internal and
# src/bin are left out), write every `@example` to a file and type-check it against the sources
# (docgen.json's examplesCompilerOptions, with the "@sluice/source" condition), then run it with tsx,
# so an example must be a complete program whose top level does no I/O. The Markdown lands in
# docs/api/<package>/, which is not committed (.gitignore): build it when you need it.
#
# docgen writes into the package's own docs/ directory (it rewrites an example's import of its own
# package to "../../src", so the examples must sit two levels under the package root); the pages are
# moved from there to docs/api/<package>. Fails on a missing @since or on an example that does not
# compile or throws.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# docgen spawns tsc and tsx from PATH.
export PATH="$root/node_modules/.bin:$PATH"
# At run time too, examples import the other workspace packages from their sources, not from dist/.
export NODE_OPTIONS="--conditions=@sluice/source${NODE_OPTIONS:+ $NODE_OPTIONS}"
mkdir -p docs/api
for pkg in ${DOCGEN_PACKAGES:-core providers simulator}; do
  start=$(date +%s)
  rm -rf "packages/$pkg/docs" "docs/api/$pkg"
  (cd "packages/$pkg" && docgen)
  mv "packages/$pkg/docs/modules" "docs/api/$pkg"
  rm -rf "packages/$pkg/docs"
  echo "docs/api/$pkg: $(find "docs/api/$pkg" -name '*.md' | wc -l) pages in $(($(date +%s) - start)) s"
done
