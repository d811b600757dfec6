/**
 * A worker entrypoint for Kubernetes (docs/deploying.md): the worker settings
 * come from the environment (`HYREX_CONCURRENCY`, `HYREX_LEASE_TTL`, …; the
 * store from `DATABASE_URL`, `HYREX_SCHEMA`, `HYREX_MIGRATE`,
 * `HYREX_MAX_CONNECTIONS`), and a small HTTP server answers the probes:
 *
 * - `GET /livez`: 200 while the process answers at all;
 * - `GET /readyz`: 200 while the worker's last lease renewal succeeded
 *   (`WorkerHandle.healthy`), 503 otherwise.
 *
 *   DATABASE_URL=postgres://… PORT=8080 npx tsx examples/kubernetes-worker.ts
 *
 * SIGTERM drains the worker (see docs/failover.md) and the process exits 0.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { createServer, type Server } from "node:http"
import { PgTaskStore, Worker, WorkerConfig } from "../src/index.js"
import { registry } from "./documents.js"

/** Serves the probes on `port` for as long as the scope is open. */
const probes = (handle: Worker.WorkerHandle, port: number) =>
  Effect.acquireRelease(
    Effect.async<Server, Error>((resume) => {
      const server = createServer((request, response) => {
        const ready = request.url === "/livez" || Effect.runSync(handle.healthy)
        response.writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
        response.end(ready ? "ok\n" : "not renewing leases\n")
      })
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(port, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )

const main = Effect.gen(function*() {
  const options = yield* WorkerConfig.fromEnv
  const handle = yield* Worker.start(registry, options)
  const server = yield* probes(handle, Number(process.env["PORT"] ?? 8080))
  const address = server.address()
  yield* Effect.logInfo(`probes on port ${typeof address === "object" && address !== null ? address.port : "?"}`)
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(PgTaskStore.layerConfig))

NodeRuntime.runMain(main)
