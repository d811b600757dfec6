/**
 * hyrex from this repository's `src/`: `PgTaskStore.layerFromUrl`, `task.sendBatch`
 * and the real `Worker.start`, with default worker options (`hyrex`), and the
 * same with `retention: 0` (`hyrex-retention0`: a succeeded task is deleted by
 * its completion write instead of kept for 3 days).
 */
import { Effect, Exit, Layer, Logger, LogLevel, ManagedRuntime, Schema, Scope } from "effect"
import { PgTaskStore, Registry, Task, Worker } from "../../src/index.js"
import { counter } from "../db.js"
import type { Handler, Installation, Payload, System, Target } from "../system.js"

const PayloadSchema = Schema.Struct({ n: Schema.Number })

const noopTask = (handler: Handler) =>
  Task.make("bench_noop", {
    payload: PayloadSchema,
    handler: (payload) =>
      Effect.suspend(() => {
        const done = handler(payload)
        return done === undefined ? Effect.void : Effect.promise(() => done)
      })
  })

/** A store with its own pool (10 connections, the default), as a separate process would have; logs at Warning and above. */
const runtimeFor = (target: Target) =>
  ManagedRuntime.make(
    Layer.merge(
      PgTaskStore.layerFromUrl(target.url, { schema: target.schema }),
      Logger.minimumLogLevel(LogLevel.Warning)
    )
  )

const variant = (name: string, settings: string, options: Worker.WorkerOptions): System => ({
  name,
  settings,
  renewsLeases: true,
  install: async (target) => {
    const producer = runtimeFor(target)
    const task = noopTask(() => undefined)
    await producer.runPromise(Effect.void) // builds the store: migrates the fresh schema
    const unfinished = counter(target.url, `SELECT count(*) AS n FROM ${target.schema}.tasks WHERE status IN ('queued', 'running')`)
    const installation: Installation = {
      enqueue: (payloads: ReadonlyArray<Payload>) => producer.runPromise(Effect.asVoid(task.sendBatch(payloads))),
      send: (payload) => producer.runPromise(Effect.asVoid(task.send(payload))),
      unfinished: unfinished.count,
      startWorker: async ({ concurrency, handler }) => {
        const runtime = runtimeFor(target)
        const scope = await runtime.runPromise(Scope.make())
        await runtime.runPromise(
          Scope.extend(
            Worker.start(Registry.make(noopTask(handler)), {
              ...options,
              concurrency,
              ...(target.leaseSeconds === undefined ? {} : { leaseTtl: `${target.leaseSeconds} seconds` })
            }),
            scope
          )
        )
        return {
          stop: async () => {
            await runtime.runPromise(Scope.close(scope, Exit.void))
            await runtime.dispose()
          }
        }
      },
      close: async () => {
        await unfinished.close()
        await producer.dispose()
      }
    }
    return installation
  }
})

export const hyrex = variant(
  "hyrex",
  "`Worker.start(registry, { concurrency })`, all other options default (prefetch 40 × concurrency, sized to about 100 ms of work; lease 15 s, heartbeat 5 s, poll 1 s + LISTEN/NOTIFY; succeeded tasks kept for 3 days); `sendBatch`",
  {}
)

export const hyrexRetention0 = variant(
  "hyrex-retention0",
  "as `hyrex`, with `retention: 0`: a succeeded task is deleted by its completion write (as graphile-worker does) instead of kept; its result and status cannot be read back",
  { retention: 0 }
)
