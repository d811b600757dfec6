/**
 * The options of a worker, their defaults, and their validation.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Either from "effect/Either"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as os from "node:os"
import * as DurationText from "./internal/durationText.js"
import { ConfigurationError } from "./Errors.js"

/** What a worker can be told. Every field is optional. */
export interface WorkerOptions {
  /** Queues to serve. Default: every queue of the registry. */
  readonly queues?: ReadonlyArray<string> | undefined
  /** In-flight tasks at most. Default 10. */
  readonly concurrency?: number | undefined
  /**
   * Claimed tasks a worker may hold in memory, waiting for a free slot, at
   * most. The worker fills this buffer only as far as about 100 ms of work at
   * its handlers' recent run time, so long tasks are not held back from other
   * workers. Default `10 * concurrency`; `0` claims only free slots.
   */
  readonly prefetch?: number | undefined
  /** How long a claim or a renewal holds a task. Default 15 s. */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How often leases are renewed. Default `leaseTtl / 3`. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** How often an idle worker looks for work when no wake-up arrives. Default 1 s. */
  readonly pollInterval?: Duration.DurationInput | undefined
  /** How long a stopping worker lets in-flight tasks finish before it releases them. Default 30 s. */
  readonly drainTimeout?: Duration.DurationInput | undefined
  /**
   * How long before its last renewal would expire a worker that cannot renew
   * interrupts its own tasks. Default `leaseTtl / 10`.
   */
  readonly fenceMargin?: Duration.DurationInput | undefined
  /** How often a worker runs store housekeeping (pruning, dead workers). Default 1 minute. */
  readonly maintenanceInterval?: Duration.DurationInput | undefined
  /**
   * How long succeeded and cancelled tasks are kept. `0`: a succeeded task is
   * deleted by its completion write (nothing to read back; cheaper for
   * Postgres). Default 3 days.
   */
  readonly retention?: Duration.DurationInput | undefined
  /** A worker silent for this long is marked dead. Default `leaseTtl * 4`. */
  readonly workerTimeout?: Duration.DurationInput | undefined
  /** A human-readable name. Default `host:pid`. */
  readonly name?: string | undefined
}

/** A worker's options after defaults and validation. */
export interface WorkerConfig {
  readonly queues: ReadonlyArray<string>
  readonly concurrency: number
  readonly prefetch: number
  readonly leaseTtl: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  readonly pollInterval: Duration.Duration
  readonly drainTimeout: Duration.Duration
  readonly fenceMargin: Duration.Duration
  readonly maintenanceInterval: Duration.Duration
  readonly retention: Duration.Duration
  readonly workerTimeout: Duration.Duration
  readonly name: string
}

/** The defaults that do not depend on other options. */
export const defaults = {
  concurrency: 10,
  /**
   * `prefetch` is this many times `concurrency` unless set: a cap on the
   * buffer, which otherwise holds about 100 ms of work. Only tasks of a few
   * milliseconds or less reach it, and for them claims of hundreds of tasks
   * cost Postgres and the worker far less per task than claims of tens.
   */
  prefetchPerSlot: 40,
  leaseTtl: Duration.seconds(15),
  pollInterval: Duration.seconds(1),
  drainTimeout: Duration.seconds(30),
  maintenanceInterval: Duration.minutes(1),
  retention: Duration.days(3)
} as const

const fail = (option: string, issue: string) => Effect.fail(new ConfigurationError({ option, issue }))

const decode = (option: string, input: Duration.DurationInput | undefined, fallback: Duration.Duration) =>
  input === undefined
    ? Effect.succeed(fallback)
    : Option.match(Duration.decodeUnknown(input), {
      onNone: () => fail(option, `${JSON.stringify(input)} is not a duration`),
      onSome: Effect.succeed
    })

/**
 * Applies defaults and checks that the options fit together: a worker must be
 * able to renew its leases before it would fence itself.
 */
export const resolve = (
  options: WorkerOptions,
  registryQueues: ReadonlyArray<string>
): Effect.Effect<WorkerConfig, ConfigurationError> =>
  Effect.gen(function*() {
    const concurrency = options.concurrency ?? defaults.concurrency
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      return yield* fail("concurrency", `must be a positive integer, got ${concurrency}`)
    }
    const prefetch = options.prefetch ?? defaults.prefetchPerSlot * concurrency
    if (!Number.isInteger(prefetch) || prefetch < 0) {
      return yield* fail("prefetch", `must be a non-negative integer, got ${prefetch}`)
    }
    const leaseTtl = yield* decode("leaseTtl", options.leaseTtl, defaults.leaseTtl)
    if (Duration.lessThanOrEqualTo(leaseTtl, Duration.zero)) return yield* fail("leaseTtl", "must be positive")
    const heartbeatInterval = yield* decode("heartbeatInterval", options.heartbeatInterval, Duration.unsafeDivide(leaseTtl, 3))
    const fenceMargin = yield* decode("fenceMargin", options.fenceMargin, Duration.unsafeDivide(leaseTtl, 10))
    if (Duration.lessThanOrEqualTo(heartbeatInterval, Duration.zero)) {
      return yield* fail("heartbeatInterval", "must be positive")
    }
    if (Duration.greaterThanOrEqualTo(Duration.sum(heartbeatInterval, fenceMargin), leaseTtl)) {
      return yield* fail(
        "heartbeatInterval",
        `heartbeatInterval (${Duration.format(heartbeatInterval)}) plus fenceMargin (${Duration.format(fenceMargin)}) must be shorter than leaseTtl (${Duration.format(leaseTtl)}), or leases expire between renewals`
      )
    }
    const pollInterval = yield* decode("pollInterval", options.pollInterval, defaults.pollInterval)
    if (Duration.lessThanOrEqualTo(pollInterval, Duration.zero)) return yield* fail("pollInterval", "must be positive")
    const drainTimeout = yield* decode("drainTimeout", options.drainTimeout, defaults.drainTimeout)
    const maintenanceInterval = yield* decode("maintenanceInterval", options.maintenanceInterval, defaults.maintenanceInterval)
    if (Duration.lessThanOrEqualTo(maintenanceInterval, Duration.zero)) {
      return yield* fail("maintenanceInterval", "must be positive")
    }
    const retention = yield* decode("retention", options.retention, defaults.retention)
    const workerTimeout = yield* decode("workerTimeout", options.workerTimeout, Duration.times(leaseTtl, 4))
    if (Duration.lessThanOrEqualTo(workerTimeout, heartbeatInterval)) {
      return yield* fail("workerTimeout", "must be longer than heartbeatInterval, or live workers are marked dead")
    }
    const queues = options.queues ?? registryQueues
    if (queues.length === 0) return yield* fail("queues", "a worker needs at least one queue")
    const unknown = queues.filter((queue) => !registryQueues.includes(queue))
    if (unknown.length > 0) {
      return yield* fail("queues", `no registered task runs on ${unknown.map((q) => `"${q}"`).join(", ")} (queues: ${registryQueues.join(", ")})`)
    }
    const name = options.name ?? `${os.hostname()}:${process.pid}`
    if (name.trim().length === 0) return yield* fail("name", "must not be empty")
    return {
      queues: Array.from(new Set(queues)),
      concurrency,
      prefetch,
      leaseTtl,
      heartbeatInterval,
      pollInterval,
      drainTimeout,
      fenceMargin,
      maintenanceInterval,
      retention,
      workerTimeout,
      name
    }
  })

/** A duration in the environment, written as in a flag: `15s`, `500ms`, `2m`, `3 days`. */
const durationVar = (name: string) =>
  Config.option(Config.string(name).pipe(
    Config.mapOrFail((text) =>
      Either.fromOption(
        DurationText.parse(text),
        () => ConfigError.InvalidData([], `"${text}" is not a duration (examples: ${DurationText.examples})`)
      )
    )
  ))

/**
 * Reads worker options from the environment: `HYREX_QUEUES` (comma
 * separated), `HYREX_CONCURRENCY`, `HYREX_PREFETCH`, `HYREX_LEASE_TTL`, `HYREX_HEARTBEAT_INTERVAL`,
 * `HYREX_POLL_INTERVAL`, `HYREX_DRAIN_TIMEOUT`, `HYREX_FENCE_MARGIN`,
 * `HYREX_MAINTENANCE_INTERVAL`, `HYREX_RETENTION`, `HYREX_WORKER_TIMEOUT`,
 * `HYREX_WORKER_NAME`. Durations are written like `15s`, `500ms` or `3 days`.
 */
export const fromEnv: Config.Config<WorkerOptions> = Config.all({
  queues: Config.option(Config.array(Config.string(), "HYREX_QUEUES")),
  concurrency: Config.option(Config.integer("HYREX_CONCURRENCY")),
  prefetch: Config.option(Config.integer("HYREX_PREFETCH")),
  leaseTtl: durationVar("HYREX_LEASE_TTL"),
  heartbeatInterval: durationVar("HYREX_HEARTBEAT_INTERVAL"),
  pollInterval: durationVar("HYREX_POLL_INTERVAL"),
  drainTimeout: durationVar("HYREX_DRAIN_TIMEOUT"),
  fenceMargin: durationVar("HYREX_FENCE_MARGIN"),
  maintenanceInterval: durationVar("HYREX_MAINTENANCE_INTERVAL"),
  retention: durationVar("HYREX_RETENTION"),
  workerTimeout: durationVar("HYREX_WORKER_TIMEOUT"),
  name: Config.option(Config.string("HYREX_WORKER_NAME"))
}).pipe(
  Config.map((fields): WorkerOptions => ({
    queues: Option.getOrUndefined(fields.queues),
    concurrency: Option.getOrUndefined(fields.concurrency),
    prefetch: Option.getOrUndefined(fields.prefetch),
    leaseTtl: Option.getOrUndefined(fields.leaseTtl),
    heartbeatInterval: Option.getOrUndefined(fields.heartbeatInterval),
    pollInterval: Option.getOrUndefined(fields.pollInterval),
    drainTimeout: Option.getOrUndefined(fields.drainTimeout),
    fenceMargin: Option.getOrUndefined(fields.fenceMargin),
    maintenanceInterval: Option.getOrUndefined(fields.maintenanceInterval),
    retention: Option.getOrUndefined(fields.retention),
    workerTimeout: Option.getOrUndefined(fields.workerTimeout),
    name: Option.getOrUndefined(fields.name)
  }))
)
