/**
 * The measurements, the same for every system. Each runs in a child process
 * of its own (see child.ts) on a fresh schema of the system's database.
 */
import { performance } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import { dropSchema, freshSchema, transactions } from "./db.js"
import type { Handler, Installation, Payload, RunningWorker, System } from "./system.js"

export interface Place {
  /** The system's own database. */
  readonly url: string
  readonly database: string
  /** The server's `postgres` database, for statistics. */
  readonly adminUrl: string
}

const payloads = (from: number, count: number): Array<Payload> => Array.from({ length: count }, (_, i) => ({ n: from + i }))

const chunks = <A>(all: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < all.length; i += size) out.push(all.slice(i, i + size))
  return out
}

/** Fails, saying `what()` at that moment, when the promise takes longer than `ms`. */
const within = async <A>(promise: Promise<A>, ms: number, what: () => string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what()}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

const deferred = <A = void>() => {
  let resolve!: (value: A) => void
  const promise = new Promise<A>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** Polls until the system reports every job finished. */
const drained = async (installation: Installation, what: string) =>
  within(
    (async () => {
      while ((await installation.unfinished()) > 0) await sleep(20)
    })(),
    120_000,
    () => what
  )

const enqueueAll = async (installation: Installation, all: ReadonlyArray<Payload>, batch: number) => {
  for (const part of chunks(all, batch)) await installation.enqueue(part)
}

const startWorkers = (installation: Installation, count: number, concurrency: number, handler: Handler) =>
  Promise.all(Array.from({ length: count }, () => installation.startWorker({ concurrency, handler })))

const stopAll = (workers: ReadonlyArray<RunningWorker>) => Promise.all(workers.map((worker) => worker.stop()))

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

/** Installs the system on a fresh schema, runs `body`, and drops the schema whatever happens. */
const onFreshSchema = async <A>(
  system: System,
  place: Place,
  body: (installation: Installation) => Promise<A>,
  leaseSeconds?: number
): Promise<A> => {
  const schema = freshSchema()
  try {
    const installation = await system.install({ url: place.url, schema, leaseSeconds })
    try {
      return await body(installation)
    } finally {
      await installation.close()
    }
  } finally {
    await dropSchema(place.url, schema)
  }
}

/** Brackets the burn-down of a run, e.g. with a CPU profiler. */
export interface BurnDownHook {
  readonly start: () => Promise<void>
  readonly stop: () => Promise<void>
}

export interface ThroughputRun {
  /** Jobs per second through the bulk API. */
  readonly enqueue: number
  /** Jobs per second from starting the workers on the backlog until the system reports all done. */
  readonly burnDown: number
  /** Median and 99th percentile of the milliseconds from send to handler start. */
  readonly latencyP50: number
  readonly latencyP99: number
}

/**
 * One run: enqueue `jobs` no-op jobs in bulk (timed), start the workers and
 * time until every job is recorded as done, then with the same workers idle,
 * send one job at a time and time until its handler starts.
 */
export const throughputRun = (
  system: System,
  place: Place,
  settings: { readonly jobs: number; readonly batch: number; readonly workers: number; readonly concurrency: number; readonly latencySamples: number },
  hook?: BurnDownHook
): Promise<ThroughputRun> =>
  onFreshSchema(system, place, async (installation) => {
    const backlog = payloads(0, settings.jobs)
    const enqueueStart = performance.now()
    await within(enqueueAll(installation, backlog, settings.batch), 600_000, () => `${system.name}: enqueue`)
    const enqueueSeconds = (performance.now() - enqueueStart) / 1000

    let handled = 0
    const allHandled = deferred()
    let current: Handler = () => {
      if (++handled === settings.jobs) allHandled.resolve()
    }
    await hook?.start()
    const burnStart = performance.now()
    const workers = await startWorkers(installation, settings.workers, settings.concurrency, (payload) => current(payload))
    try {
      await within(allHandled.promise, 600_000, () => `${system.name}: burn-down (${handled} of ${settings.jobs} handled)`)
      await drained(installation, `${system.name}: recording the last completions`)
      const burnSeconds = (performance.now() - burnStart) / 1000
      await hook?.stop()

      const latencies: Array<number> = []
      for (let i = 0; i < settings.latencySamples; i++) {
        const n = settings.jobs + i
        const started = deferred<number>()
        current = (payload) => {
          if (payload.n === n) started.resolve(performance.now())
        }
        const sentAt = performance.now()
        await installation.send({ n })
        latencies.push((await within(started.promise, 30_000, () => `${system.name}: latency sample ${i}`)) - sentAt)
        // Let the worker record the job and go idle before the next send.
        await sleep(5)
      }
      latencies.sort((a, b) => a - b)
      return {
        enqueue: settings.jobs / enqueueSeconds,
        burnDown: settings.jobs / burnSeconds,
        latencyP50: percentile(latencies, 50),
        latencyP99: percentile(latencies, 99)
      }
    } finally {
      await stopAll(workers)
    }
  })

export interface HeartbeatFigure {
  readonly inFlight: number
  /** Transactions per second reaching the system's database while the jobs sleep. */
  readonly statementsPerSecond: number
}

/**
 * `inFlight` long-running jobs spread over `workers` workers (each with
 * concurrency inFlight / workers, so every worker is full and none polls for
 * more): counts the transactions the system's database sees in a window while
 * every job sleeps. With nothing else happening, that is the cost of keeping
 * jobs alive: lease renewals, plus whatever the system does periodically.
 */
export const heartbeat = (
  system: System,
  place: Place,
  settings: { readonly inFlight: number; readonly workers: number; readonly batch: number; readonly windowSeconds: number; readonly leaseSeconds: number }
): Promise<HeartbeatFigure> =>
  onFreshSchema(
    system,
    place,
    async (installation) => {
      const release = deferred()
      const allStarted = deferred()
      let started = 0
      const handler: Handler = () => {
        if (++started === settings.inFlight) allStarted.resolve()
        return release.promise
      }
      const workers = await startWorkers(installation, settings.workers, settings.inFlight / settings.workers, handler)
      try {
        await enqueueAll(installation, payloads(0, settings.inFlight), settings.batch)
        await within(allStarted.promise, 120_000, () => `${system.name}: ${settings.inFlight} jobs in flight (${started} started)`)
        // A backend that was busy publishes its statistics up to 10 s after it
        // goes idle (PostgreSQL's PGSTAT_IDLE_INTERVAL): wait that out so the
        // claims and migrations above do not land in the window.
        await sleep(11_000)
        const before = await transactions(place.adminUrl, place.database)
        await sleep(settings.windowSeconds * 1000)
        const after = await transactions(place.adminUrl, place.database)
        return { inFlight: settings.inFlight, statementsPerSecond: (after - before) / settings.windowSeconds }
      } finally {
        release.resolve()
        await drained(installation, `${system.name}: finishing the long-running jobs`).catch((error) => console.error(error))
        await stopAll(workers)
      }
    },
    settings.leaseSeconds
  )

/** Installs the system on `schema` and enqueues a backlog there, for `memory` to burn in a fresh process. */
export const fill = async (system: System, place: Place, schema: string, backlog: number, batch: number): Promise<void> => {
  const installation = await system.install({ url: place.url, schema })
  try {
    await enqueueAll(installation, payloads(0, backlog), batch)
  } finally {
    await installation.close()
  }
}

export interface MemoryFigure {
  readonly backlog: number
  /** Resident set size of this process before the worker starts, MB. */
  readonly baselineRss: number
  /** Highest resident set size until the worker had done `jobs` jobs (or the window ended), MB: the same work for every backlog. */
  readonly peakRss: number
  /** The jobs `peakRss` covers. */
  readonly jobs: number
  /** Highest resident set size over the whole window, MB: a long burn-down, for the larger backlogs. */
  readonly windowPeakRss: number
  /** V8 heap still in use after a full garbage collection at the end of the window, worker running, MB. */
  readonly liveHeap: number
  /** Jobs the worker finished while sampled. */
  readonly processed: number
}

const mb = (bytes: number) => bytes / 1024 / 1024

/**
 * In a process that has done nothing else: starts one worker on the backlog
 * left by `fill`, samples the resident set every 50 ms for `seconds`, measures
 * the live heap after a full GC (the process runs with --expose-gc), stops the
 * worker and drops the schema. The peak until `jobs` jobs are done compares
 * backlogs over the same work; over the whole window, a worker on a small
 * backlog is idle most of the time and one on a large backlog busy
 * throughout, which says how memory follows the work rather than the backlog.
 */
export const memory = async (
  system: System,
  place: Place,
  settings: {
    readonly schema: string
    readonly backlog: number
    readonly concurrency: number
    readonly seconds: number
    readonly jobs: number
  }
): Promise<MemoryFigure> => {
  try {
    const installation = await system.install({ url: place.url, schema: settings.schema })
    try {
      const baselineRss = mb(process.memoryUsage().rss)
      let processed = 0
      let peakRss = 0
      let windowPeakRss = 0
      let jobs: number | undefined
      const sample = () => {
        const rss = mb(process.memoryUsage.rss())
        windowPeakRss = Math.max(windowPeakRss, rss)
        if (jobs === undefined) peakRss = Math.max(peakRss, rss)
      }
      const sampler = setInterval(sample, 50)
      const [worker] = await startWorkers(installation, 1, settings.concurrency, () => {
        if (++processed !== settings.jobs) return
        sample()
        jobs = processed
      })
      await sleep(settings.seconds * 1000)
      sample()
      clearInterval(sampler)
      globalThis.gc?.()
      const liveHeap = mb(process.memoryUsage().heapUsed)
      await worker!.stop()
      return {
        backlog: settings.backlog,
        baselineRss,
        peakRss,
        jobs: jobs ?? processed,
        windowPeakRss,
        liveHeap,
        processed
      }
    } finally {
      await installation.close()
    }
  } finally {
    await dropSchema(place.url, settings.schema)
  }
}
