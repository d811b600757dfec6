/**
 * The store contract and the worker semantics against the Postgres store:
 * the very suites the in-memory store passes, on a real server (see
 * test/utils/TestDatabase.ts for where it comes from), in real time.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PgTaskStore from "../src/PgTaskStore.js"
import { taskStoreSuite } from "./suites/TaskStoreSuite.js"
import { workerSuite } from "./suites/WorkerSuite.js"
import type { StoreHarness } from "./utils/StoreHarness.js"
import * as TestDatabase from "./utils/TestDatabase.js"

// PGlite's socket multiplexer answers concurrent connections unreliably (an
// INSERT … RETURNING can come back empty), so the embedded fallback gets one.
const kind = await Effect.runPromise(TestDatabase.kind)

// A fresh schema per test, in a database of this file's own.
const database = TestDatabase.layerWith({ maxConnections: kind === "embedded" ? 1 : 20 })
let schemas = 0

const harness: StoreHarness = {
  name: "postgres",
  layer: Layer.suspend(() => PgTaskStore.layer({ schema: `suite_${++schemas}` })).pipe(Layer.provide(database)),
  clock: "live",
  wakeups: TestDatabase.capabilitiesOf(kind).listenNotify
}

taskStoreSuite(harness)
workerSuite(harness)
