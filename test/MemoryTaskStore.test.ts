/**
 * The store contract and the worker semantics against the in-memory store,
 * under TestClock.
 */
import * as MemoryTaskStore from "../src/MemoryTaskStore.js"
import { taskStoreSuite } from "./suites/TaskStoreSuite.js"
import { workerSuite } from "./suites/WorkerSuite.js"
import type { StoreHarness } from "./utils/StoreHarness.js"

const harness: StoreHarness = {
  name: "memory",
  layer: MemoryTaskStore.layer,
  clock: "test-clock"
}

taskStoreSuite(harness)
workerSuite(harness)
