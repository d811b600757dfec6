/**
 * pg-boss 12: `insert()` for bulk enqueue, `work()` with batches, LISTEN/NOTIFY
 * on (`useListenNotify` + a `notify: true` queue) and `burstWhenBatchFull`, so
 * a worker fetches again at once while batches come back full instead of
 * waiting for its polling interval.
 */
import { PgBoss } from "pg-boss"
import { counter } from "../db.js"
import type { Installation, Payload, System, Target } from "../system.js"

const queue = "bench_noop"

/**
 * `concurrency` jobs in flight as `localConcurrency` fetch loops of `batchSize`
 * jobs each (the largest divisor of `concurrency` up to 10): a handler gets a
 * batch and pg-boss completes it in one statement.
 */
export const split = (concurrency: number) => {
  let batchSize = Math.min(concurrency, 10)
  while (concurrency % batchSize !== 0) batchSize--
  return { batchSize, localConcurrency: concurrency / batchSize }
}

const boss = async (target: Target) => {
  const instance = new PgBoss({
    connectionString: target.url,
    schema: target.schema,
    useListenNotify: true,
    schedule: false
  })
  instance.on("error", (error) => console.error("pg-boss:", error))
  await instance.start()
  return instance
}

export const pgboss: System = {
  name: "pgboss",
  settings: "pg-boss: `useListenNotify`, queue `notify: true`, `work()` with `localConcurrency` × `batchSize` = concurrency (batches of 10 for 50), `burstWhenBatchFull`; heartbeat scenario: `heartbeatSeconds` 15",
  renewsLeases: true,
  install: async (target) => {
    const producer = await boss(target)
    // Heartbeats are off by default in pg-boss (a job expires after 15 min); the
    // heartbeat scenario turns them on so that a dead worker is noticed about as
    // soon as with a 15 s lease.
    await producer.createQueue(queue, {
      notify: true,
      ...(target.leaseSeconds === undefined ? {} : { heartbeatSeconds: target.leaseSeconds })
    })
    const unfinished = counter(target.url, `SELECT count(*) AS n FROM ${target.schema}.job WHERE state < 'completed'`)
    const installation: Installation = {
      enqueue: async (payloads: ReadonlyArray<Payload>) => {
        await producer.insert(queue, payloads.map((data) => ({ data })))
      },
      send: async (payload) => {
        await producer.send(queue, payload)
      },
      unfinished: unfinished.count,
      startWorker: async ({ concurrency, handler }) => {
        const worker = await boss(target)
        await worker.work<Payload>(queue, { ...split(concurrency), burstWhenBatchFull: true }, async (jobs) => {
          await Promise.all(jobs.map((job) => handler(job.data)))
        })
        return { stop: () => worker.stop({ graceful: true, timeout: 60_000 }) }
      },
      close: async () => {
        await unfinished.close()
        await producer.stop({ graceful: false })
      }
    }
    return installation
  }
}
