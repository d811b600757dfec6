/**
 * BullMQ 6.7 on its PostgreSQL backend (`createPostgresBackend`): `addBulk`
 * for bulk enqueue, a `Worker` with `concurrency`, default job options.
 */
import { createPostgresBackend, withBackend } from "bullmq"
import type { Installation, Payload, System, Target } from "../system.js"

const queueName = "bench_noop"

/** Queue and Worker bound to the PostgreSQL backend. */
const { Queue, Worker } = withBackend(createPostgresBackend)

const connection = (target: Target) => ({ connectionString: target.url, schema: target.schema, migrate: true })

export const bullmq: System = {
  name: "bullmq",
  settings: "BullMQ with `createPostgresBackend` (pool of 10 + a LISTEN connection), `Worker` with `concurrency`, defaults otherwise (lock 30 s renewed every 15 s; heartbeat scenario: lock 15 s); `addBulk`",
  renewsLeases: true,
  install: async (target) => {
    const queue = new Queue<Payload, void, string>(queueName, { connection: connection(target) })
    queue.on("error", (error) => console.error("bullmq queue:", error))
    await queue.waitUntilReady()
    const installation: Installation = {
      enqueue: async (payloads) => {
        await queue.addBulk(payloads.map((data) => ({ name: "noop", data })))
      },
      send: async (payload) => {
        await queue.add("noop", payload)
      },
      unfinished: async () => {
        const counts = await queue.getJobCounts("wait", "active", "delayed", "prioritized", "waiting-children")
        return Object.values(counts).reduce((sum, n) => sum + n, 0)
      },
      startWorker: async ({ concurrency, handler }) => {
        const worker = new Worker<Payload, void, string>(
          queueName,
          async (job) => {
            await handler(job.data)
          },
          {
            connection: connection(target),
            concurrency,
            ...(target.leaseSeconds === undefined ? {} : { lockDuration: target.leaseSeconds * 1000 })
          }
        )
        worker.on("error", (error) => console.error("bullmq worker:", error))
        await worker.waitUntilReady()
        return { stop: () => worker.close() }
      },
      close: () => queue.close()
    }
    return installation
  }
}
