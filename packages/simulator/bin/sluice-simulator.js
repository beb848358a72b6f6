#!/usr/bin/env node
// The `sluice-simulator` command: the built CLI (`pnpm --filter @sluice/simulator build` first).
// A launcher rather than a bin pointing into dist, so that installing the workspace links it before any build.
import "../dist/bin/simulator.js"
