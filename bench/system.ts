/**
 * What the scenarios need from a job system. One adapter per system lives in
 * `systems/`; each uses that system's own public API only.
 */

/** Every benchmark job carries this payload. */
export interface Payload {
  readonly n: number
}

/** The work a job does: a no-op returns nothing, a long-running job returns a promise. */
export type Handler = (payload: Payload) => void | Promise<void>

export interface WorkerOptions {
  /** Jobs in flight at most, per worker instance. */
  readonly concurrency: number
  /** Called by every job. */
  readonly handler: Handler
}

/** A started worker instance (its own pool / connections, as in its own process). */
export interface RunningWorker {
  /** Stops the worker; every job it started has settled when this resolves. */
  readonly stop: () => Promise<void>
}

/** One system installed in one Postgres schema. */
export interface Installation {
  /** Enqueues the payloads with the system's bulk API, one call per batch. */
  readonly enqueue: (payloads: ReadonlyArray<Payload>) => Promise<void>
  /** Enqueues one job with the system's single-job API. */
  readonly send: (payload: Payload) => Promise<void>
  /** Jobs that are not finished yet (queued, running, or completed but not yet recorded). */
  readonly unfinished: () => Promise<number>
  readonly startWorker: (options: WorkerOptions) => Promise<RunningWorker>
  /** Closes the producer side's connections. */
  readonly close: () => Promise<void>
}

export interface Target {
  /** A database of its own for this system. */
  readonly url: string
  /** A fresh schema (`bench_<random>`) for this run. */
  readonly schema: string
  /**
   * Set by the heartbeat scenario: the lease (or lock, or heartbeat timeout)
   * after which a dead worker's job is taken over, for systems that renew one.
   * Otherwise each system's default.
   */
  readonly leaseSeconds?: number | undefined
}

export interface System {
  readonly name: string
  /** One line on how the system is configured, for the report. */
  readonly settings: string
  /** Whether the system renews leases of running jobs at all. */
  readonly renewsLeases: boolean
  /** Why the heartbeat scenario does not apply, if it does not. */
  readonly noHeartbeatFigure?: string | undefined
  /** Creates (or attaches to) the system's tables in `target.schema`. */
  readonly install: (target: Target) => Promise<Installation>
}
