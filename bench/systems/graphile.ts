/**
 * graphile-worker: `run()` with a task list, `WorkerUtils.addJobs` for bulk
 * enqueue. Two variants: default settings, and its documented batching mode.
 */
import { Logger, makeWorkerUtils, run, type WorkerUtils } from "graphile-worker"
import { counter } from "../db.js"
import type { Handler, Installation, System, Target } from "../system.js"

const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`)
})

const variant = (
  name: string,
  settings: string,
  preset: GraphileConfig.Preset | undefined,
  noHeartbeatFigure?: string
): System => ({
  name,
  settings,
  renewsLeases: false,
  noHeartbeatFigure,
  install: async (target: Target) => {
    const utils: WorkerUtils = await makeWorkerUtils({ connectionString: target.url, schema: target.schema, logger: quiet })
    await utils.migrate()
    const unfinished = counter(target.url, `SELECT count(*) AS n FROM ${target.schema}._private_jobs`)
    const installation: Installation = {
      enqueue: async (payloads) => {
        await utils.addJobs(payloads.map((payload) => ({ identifier: "bench_noop", payload })))
      },
      send: async (payload) => {
        await utils.addJob("bench_noop", payload)
      },
      unfinished: unfinished.count,
      startWorker: async ({ concurrency, handler }: { concurrency: number; handler: Handler }) => {
        const runner = await run({
          connectionString: target.url,
          schema: target.schema,
          concurrency,
          noHandleSignals: true,
          logger: quiet,
          crontab: "",
          taskList: {
            bench_noop: async (payload) => {
              await handler(payload as { n: number })
            }
          },
          ...(preset === undefined ? {} : { preset })
        })
        return { stop: () => runner.stop() }
      },
      close: async () => {
        await unfinished.close()
        await utils.release()
      }
    }
    return installation
  }
})

export const graphile = variant(
  "graphile",
  "graphile-worker defaults (`concurrency` jobs, pool of 10, LISTEN/NOTIFY + 2 s poll, no local queue, no completion batching); no lease renewal (a job is locked for 4 h)",
  undefined
)

export const graphileBatched = variant(
  "graphile-batched",
  "graphile-worker with `localQueue: { size: 500 }`, `completeJobBatchDelay: 0` (its documented batching mode), otherwise as `graphile`",
  { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0 } },
  // The first worker's local queue locks up to 500 jobs, so the others stay
  // idle and the in-flight target is never reached; it renews nothing either way.
  "its local queue holds the jobs in one worker, so they cannot spread over 4; no lease renewal, like graphile"
)
