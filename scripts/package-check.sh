#!/usr/bin/env bash
# Packages anyone can install. Builds @sluice/core, @sluice/providers and @sluice/simulator
# from a clean dist (in dependency order, each against its dependencies' built dist),
# lints each as it would be published (publint, and attw with the esm-only profile over
# every public module), packs them, installs the tarballs into a fresh npm project outside
# the workspace, and runs two smoke programs there against the packed simulator:
#   smoke.mjs  the Promise facade (createClient) from plain JavaScript;
#   smoke.ts   Governor.layer over Anthropic.layer, type-checked by tsc (NodeNext, strict,
#              skipLibCheck off: our .d.ts are checked too), then run from tsc's output.
# Each program exits non-zero unless its call succeeded and the simulator counted it. The
# installed sluice-simulator command must answer --help (its launcher, dist/bin and @effect/cli).
# Needs the npm registry (effect and its peers, typescript), nothing else. Temp dirs are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
publishable=(core providers simulator)
pnpm() { npx -y pnpm@10 "$@"; }
step() { printf -- '-- %s (at %ss)\n' "$*" "$SECONDS"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT

step "build (from a clean dist, dependency order)"
filters=()
for name in "${publishable[@]}"; do
  rm -rf "packages/$name/dist"
  filters+=(--filter "./packages/$name")
done
# `-r` with filters runs in topological order: core, then providers, then the simulator.
# tsconfig.build.json sets no custom condition, so each resolves @sluice/* through its built dist.
pnpm -r "${filters[@]}" build

step "pack"
mkdir -p "$work/tarballs"
for name in "${publishable[@]}"; do
  # pnpm pack turns `workspace:^` into the real version range, as publishing does.
  (cd "packages/$name" && pnpm pack --pack-destination "$work/tarballs" >/dev/null)
done
tarball() { ls "$work/tarballs/sluice-$1-"*.tgz; }

step "lint (publint --strict, attw --profile esm-only)"
for name in "${publishable[@]}"; do
  # Every public module is its own entry point ("./*" in exports is a wildcard attw cannot expand).
  entrypoints=$(cd "packages/$name/src" && find . -name '*.ts' ! -path './internal/*' ! -path './bin/*' ! -name index.ts | sed -E 's/\.ts$//' | sort)
  "$root/node_modules/.bin/publint" run --strict "$(tarball "$name")"
  # shellcheck disable=SC2086
  "$root/node_modules/.bin/attw" "$(tarball "$name")" --profile esm-only --format ascii --no-emoji --no-color \
    --include-entrypoints $entrypoints >"$work/attw-$name.txt" || { cat "$work/attw-$name.txt"; exit 1; }
  echo "attw: @sluice/$name, $(echo "$entrypoints" | wc -l) subpaths and the root: no problems"
done

step "install the tarballs into a fresh project outside the workspace"
# The versions the workspace tested with: effect, the @effect packages the simulator and its peers
# need, typescript and @types/node; the root's own when it has one, otherwise pnpm-lock.yaml's
# (those have one version there). Pinned so that a newer release of one of them does not make
# this check fail (or pass) for reasons of its own.
locked() {
  local version
  if [ -f "$root/node_modules/$1/package.json" ]; then
    version=$(node -p 'require(process.argv[1]).version' "$root/node_modules/$1/package.json")
  else
    version=$(sed -nE "s#^  '?$1@([0-9][^(':]*)'?:\$#\1#p" pnpm-lock.yaml | head -n 1)
  fi
  [ -n "$version" ] || { echo "no $1 in pnpm-lock.yaml" >&2; exit 1; }
  echo "$1@$version"
}
deps=()
for name in effect @effect/platform @effect/platform-node @effect/cli @effect/printer @effect/printer-ansi \
  @effect/typeclass @effect/cluster @effect/rpc @effect/sql @effect/workflow @effect/experimental typescript @types/node; do
  deps+=("$(locked "$name")")
done
app="$work/app"
mkdir -p "$app"
cd "$app"
npm init -y >/dev/null
npm pkg set type=module private=true
npm install --no-audit --no-fund --loglevel=error \
  "$(tarball core)" "$(tarball providers)" "$(tarball simulator)" "${deps[@]}"
cp "$root/scripts/package-smoke/smoke.mjs" "$root/scripts/package-smoke/smoke.ts" "$root/scripts/package-smoke/tsconfig.json" .

step "smoke: the sluice-simulator command starts (--help)"
help=$(./node_modules/.bin/sluice-simulator --help)
grep -q "Sluice provider simulator" <<<"$help"

step "smoke: the Promise facade from plain JavaScript"
node smoke.mjs

step "smoke: Governor.layer over Anthropic.layer in TypeScript (tsc, then node on its output)"
# One tsc run both type-checks and emits: noEmitOnError, so a type error stops here with nothing to run.
./node_modules/.bin/tsc -p tsconfig.json
node out/smoke.js

step "packages: core, providers, simulator build, lint, install and run outside the workspace"
