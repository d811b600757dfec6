/**
 * One phase for one system, in a process of its own: the parent (run.ts)
 * forks this file, sends a `Job`, and gets back a `Reply`. A fresh process
 * per phase keeps the libraries apart and makes the memory figure that of a
 * worker process only. A throughput job is one measured run after a warm-up
 * of its own, so that the parent can take turns between systems.
 */
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector/promises"
import { join } from "node:path"
import type { Options } from "./options.js"
import * as Scenarios from "./scenarios.js"
import { load, type Name } from "./systems/index.js"

export type Job =
  | {
    readonly phase: "throughput"
    readonly system: Name
    readonly place: Scenarios.Place
    readonly options: Options
    /** Which measured run this is (1-based): one per child, after its own warm-up. */
    readonly run: number
  }
  | { readonly phase: "heartbeat"; readonly system: Name; readonly place: Scenarios.Place; readonly options: Options }
  | {
    readonly phase: "fill"
    readonly system: Name
    readonly place: Scenarios.Place
    readonly options: Options
    readonly schema: string
    readonly backlog: number
  }
  | {
    readonly phase: "memory"
    readonly system: Name
    readonly place: Scenarios.Place
    readonly options: Options
    readonly schema: string
    readonly backlog: number
  }

export interface ThroughputResult {
  readonly settings: string
  readonly renewsLeases: boolean
  readonly run: Scenarios.ThroughputRun
}

export type Reply =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly error: string }

/** CPU profiles of the measured burn-downs only, written to `dir` as `<system>-run<n>.cpuprofile`. */
const profiler = (dir: string, system: string, run: number): Scenarios.BurnDownHook => {
  const session = new Session()
  return {
    start: async () => {
      session.connect()
      await session.post("Profiler.enable")
      await session.post("Profiler.start")
    },
    stop: async () => {
      const { profile } = await session.post("Profiler.stop")
      writeFileSync(join(dir, `${system}-run${run}.cpuprofile`), JSON.stringify(profile))
      session.disconnect()
    }
  }
}

const runPhase = async (job: Job): Promise<unknown> => {
  const system = await load(job.system)
  const { options, place } = job
  switch (job.phase) {
    case "throughput": {
      const settings = {
        batch: options.batch,
        workers: options.workers,
        concurrency: options.concurrency
      }
      // Warm-up: the JIT, the pools and the server's caches; not recorded.
      await Scenarios.throughputRun(system, place, {
        ...settings,
        jobs: Math.max(500, Math.round(options.jobs / 5)),
        latencySamples: Math.min(50, options.latencySamples)
      })
      const hook = options.cpuProf === undefined ? undefined : profiler(options.cpuProf, system.name, job.run)
      const run = await Scenarios.throughputRun(
        system,
        place,
        { ...settings, jobs: options.jobs, latencySamples: options.latencySamples },
        hook
      )
      const result: ThroughputResult = { settings: system.settings, renewsLeases: system.renewsLeases, run }
      return result
    }
    case "heartbeat": {
      const figures: Array<Scenarios.HeartbeatFigure> = []
      if (system.noHeartbeatFigure !== undefined) return figures
      for (const inFlight of options.inFlight) {
        figures.push(
          await Scenarios.heartbeat(system, place, {
            inFlight,
            workers: options.heartbeatWorkers,
            batch: options.batch,
            windowSeconds: options.windowSeconds,
            leaseSeconds: options.leaseSeconds
          })
        )
      }
      return figures
    }
    case "fill":
      return Scenarios.fill(system, place, job.schema, job.backlog, options.batch)
    case "memory":
      return Scenarios.memory(system, place, {
        schema: job.schema,
        backlog: job.backlog,
        concurrency: options.concurrency,
        seconds: options.memorySeconds,
        jobs: options.memoryJobs
      })
  }
}

process.once("message", (job: Job) => {
  runPhase(job).then(
    (result) => process.send!({ ok: true, result } satisfies Reply, () => process.exit(0)),
    (error: unknown) =>
      process.send!(
        { ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies Reply,
        () => process.exit(1)
      )
  )
})
