import { LimiterStore } from "@sluice/core"
import { limiterStoreSuite } from "./suites/limiterStore.js"

let keys = 0
limiterStoreSuite("memory", () => LimiterStore.layerMemory, () => `memory-suite/${++keys}`)
