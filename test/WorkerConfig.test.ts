import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as os from "node:os"
import * as MemoryTaskStore from "../src/MemoryTaskStore.js"
import * as Registry from "../src/Registry.js"
import * as Task from "../src/Task.js"
import { TaskStore } from "../src/TaskStore.js"
import * as Worker from "../src/Worker.js"
import * as WorkerConfig from "../src/WorkerConfig.js"

const millisOf = (config: WorkerConfig.WorkerConfig) => ({
  leaseTtl: Duration.toMillis(config.leaseTtl),
  heartbeatInterval: Duration.toMillis(config.heartbeatInterval),
  fenceMargin: Duration.toMillis(config.fenceMargin),
  pollInterval: Duration.toMillis(config.pollInterval),
  drainTimeout: Duration.toMillis(config.drainTimeout),
  maintenanceInterval: Duration.toMillis(config.maintenanceInterval),
  retention: Duration.toMillis(config.retention),
  workerTimeout: Duration.toMillis(config.workerTimeout)
})

describe("WorkerConfig", () => {
  it.effect("defaults", () =>
    Effect.gen(function*() {
      const config = yield* WorkerConfig.resolve({}, ["billing", "documents"])
      expect(config.queues).toEqual(["billing", "documents"])
      expect(config.concurrency).toBe(10)
      expect(config.prefetch).toBe(400)
      expect(config.name).toBe(`${os.hostname()}:${process.pid}`)
      expect(millisOf(config)).toEqual({
        leaseTtl: 15_000,
        heartbeatInterval: 5_000,
        fenceMargin: 1_500,
        pollInterval: 1_000,
        drainTimeout: 30_000,
        maintenanceInterval: 60_000,
        retention: 3 * 24 * 3_600_000,
        workerTimeout: 60_000
      })
    }))

  it.effect("heartbeatInterval, fenceMargin and workerTimeout follow leaseTtl", () =>
    Effect.gen(function*() {
      const config = yield* WorkerConfig.resolve({ leaseTtl: "3 seconds" }, ["a"])
      expect(millisOf(config)).toMatchObject({ leaseTtl: 3000, heartbeatInterval: 1000, fenceMargin: 300, workerTimeout: 12_000 })
    }))

  it.effect("given options win; queues are deduplicated", () =>
    Effect.gen(function*() {
      const config = yield* WorkerConfig.resolve({
        queues: ["a", "a"],
        concurrency: 3,
        leaseTtl: "20 seconds",
        heartbeatInterval: "2 seconds",
        pollInterval: "250 millis",
        drainTimeout: "5 seconds",
        fenceMargin: "1 second",
        name: "billing-worker"
      }, ["a", "b"])
      expect(config).toMatchObject({ queues: ["a"], concurrency: 3, name: "billing-worker" })
      expect(millisOf(config)).toMatchObject({
        leaseTtl: 20_000,
        heartbeatInterval: 2_000,
        pollInterval: 250,
        drainTimeout: 5_000,
        fenceMargin: 1_000
      })
    }))

  it.effect.each([
    ["heartbeatInterval equal to leaseTtl", { leaseTtl: "10 seconds", heartbeatInterval: "10 seconds" }, "heartbeatInterval"],
    ["heartbeatInterval above leaseTtl", { leaseTtl: "10 seconds", heartbeatInterval: "20 seconds" }, "heartbeatInterval"],
    ["heartbeatInterval plus fenceMargin reaching leaseTtl", {
      leaseTtl: "10 seconds",
      heartbeatInterval: "6 seconds",
      fenceMargin: "4 seconds"
    }, "heartbeatInterval"],
    ["a zero heartbeatInterval", { heartbeatInterval: 0 }, "heartbeatInterval"],
    ["a queue no task runs on", { queues: ["nope"] }, "queues"],
    ["no queues", { queues: [] }, "queues"],
    ["concurrency 0", { concurrency: 0 }, "concurrency"],
    ["negative concurrency", { concurrency: -1 }, "concurrency"],
    ["fractional concurrency", { concurrency: 1.5 }, "concurrency"],
    ["a negative prefetch", { prefetch: -1 }, "prefetch"],
    ["a fractional prefetch", { prefetch: 0.5 }, "prefetch"],
    ["a zero leaseTtl", { leaseTtl: 0 }, "leaseTtl"],
    ["a zero pollInterval", { pollInterval: 0 }, "pollInterval"],
    ["a blank name", { name: "  " }, "name"],
    ["a zero maintenanceInterval", { maintenanceInterval: 0 }, "maintenanceInterval"],
    ["a workerTimeout within one heartbeat", { workerTimeout: "1 second" }, "workerTimeout"]
  ] as const)("%s is a ConfigurationError", ([_, options, option]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(WorkerConfig.resolve(options, ["a", "b"]))
      expect(error._tag).toBe("ConfigurationError")
      expect(error.option).toBe(option)
    }))

  it.effect("an unknown queue is named, with the queues the registry serves", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(WorkerConfig.resolve({ queues: ["a", "zzz"] }, ["a", "b"]))
      expect(error.message).toContain("zzz")
      expect(error.message).toContain("a, b")
    }))

  it.effect("fromEnv reads the HYREX_* variables", () =>
    Effect.gen(function*() {
      const options = yield* WorkerConfig.fromEnv.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(
        new Map([
          ["HYREX_QUEUES", "a,b"],
          ["HYREX_CONCURRENCY", "4"],
          ["HYREX_PREFETCH", "0"],
          ["HYREX_LEASE_TTL", "30 seconds"],
          ["HYREX_HEARTBEAT_INTERVAL", "5 seconds"],
          ["HYREX_POLL_INTERVAL", "200 millis"],
          ["HYREX_DRAIN_TIMEOUT", "1 minute"],
          ["HYREX_WORKER_NAME", "env-worker"]
        ])
      )))
      const config = yield* WorkerConfig.resolve(options, ["a", "b", "c"])
      expect(config).toMatchObject({ queues: ["a", "b"], concurrency: 4, prefetch: 0, name: "env-worker" })
      expect(millisOf(config)).toMatchObject({
        leaseTtl: 30_000,
        heartbeatInterval: 5_000,
        pollInterval: 200,
        drainTimeout: 60_000
      })
      const empty = yield* WorkerConfig.fromEnv.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      expect(Object.values(empty).every((value) => value === undefined)).toBe(true)
    }))

  it.effect("fromEnv takes durations written as in flags, and names a bad one", () =>
    Effect.gen(function*() {
      const read = (vars: Record<string, string>) =>
        WorkerConfig.fromEnv.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars)))))
      const options = yield* read({
        HYREX_LEASE_TTL: "20s",
        HYREX_HEARTBEAT_INTERVAL: "500ms",
        HYREX_FENCE_MARGIN: "1.5s",
        HYREX_MAINTENANCE_INTERVAL: "2m",
        HYREX_RETENTION: "3 days",
        HYREX_WORKER_TIMEOUT: "1h"
      })
      const config = yield* WorkerConfig.resolve(options, ["default"])
      expect({
        leaseTtl: Duration.toMillis(config.leaseTtl),
        heartbeatInterval: Duration.toMillis(config.heartbeatInterval),
        fenceMargin: Duration.toMillis(config.fenceMargin),
        maintenanceInterval: Duration.toMillis(config.maintenanceInterval),
        retention: Duration.toMillis(config.retention),
        workerTimeout: Duration.toMillis(config.workerTimeout)
      }).toEqual({
        leaseTtl: 20_000,
        heartbeatInterval: 500,
        fenceMargin: 1_500,
        maintenanceInterval: 120_000,
        retention: 3 * 86_400_000,
        workerTimeout: 3_600_000
      })
      const error = yield* Effect.flip(read({ HYREX_LEASE_TTL: "fifteen" }))
      expect(String(error)).toContain("HYREX_LEASE_TTL")
      expect(String(error)).toContain("is not a duration")
    }))

  it.scoped("Worker.start with a bad configuration fails with ConfigurationError and registers nothing", () =>
    Effect.gen(function*() {
      const task = Task.make("noop", { payload: Schema.Struct({}), handler: () => Effect.void })
      const registry = Registry.make(task)
      const misconfigured: ReadonlyArray<Worker.WorkerOptions> = [
        { concurrency: 0 },
        { queues: ["elsewhere"] },
        { leaseTtl: "1 second", heartbeatInterval: "1 second" }
      ]
      for (const options of misconfigured) {
        const error = yield* Effect.flip(Worker.start(registry, options))
        expect(error._tag).toBe("ConfigurationError")
      }
      const store = yield* TaskStore
      expect(yield* store.listWorkers).toEqual([])
    }).pipe(Effect.provide(MemoryTaskStore.layer)))
})
