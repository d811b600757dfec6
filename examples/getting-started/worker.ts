/**
 * Getting started, step 3: a worker process, drained by SIGTERM / Ctrl-C.
 *
 *   DATABASE_URL=postgres://… npx tsx examples/getting-started/worker.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { PgTaskStore, Worker } from "../../src/index.js"
import { registry } from "./tasks.js"

Worker.layer(registry, { concurrency: 16 }).pipe(
  Layer.provide(PgTaskStore.layerConfig),
  Layer.launch,
  NodeRuntime.runMain
)
