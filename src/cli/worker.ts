/**
 * `hyrex worker <module>`: runs the tasks of a module's registry until
 * SIGTERM / SIGINT, then drains (in-flight tasks get `--drain-timeout` to
 * finish, stragglers are released); a second signal exits at once.
 *
 * Handlers can use the `TaskStore` and `@effect/sql`'s `SqlClient` (the
 * worker's own pool); anything else they need the module provides as an
 * exported `layer`. The worker sets `HYREX_SCHEMA` to the schema it runs on,
 * so handlers can find their own tables next to hyrex's.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Duration from "effect/Duration"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { ConfigurationError, StoreError } from "../Errors.js"
import type { TaskStore } from "../TaskStore.js"
import * as Worker from "../Worker.js"
import * as WorkerConfig from "../WorkerConfig.js"
import { CliError, oneLine, redactUrl } from "./CliError.js"
import * as Database from "./Database.js"
import * as Input from "./Input.js"
import * as WorkerModule from "./WorkerModule.js"

const durationOption = (name: string, description: string) =>
  Options.text(name).pipe(Options.withPseudoName("duration"), Options.withDescription(description), Options.optional)

/**
 * A worker started by a parent over IPC (`hyrex demo`) stops when the parent
 * goes away, the way it stops on SIGTERM: by sending itself one. (Racing the
 * worker against the disconnect would not do: an interrupted race does not
 * wait for the worker's drain, so the pool would close under it.)
 */
const stopWithParent = Effect.acquireRelease(
  Effect.sync(() => {
    const onDisconnect = () => process.kill(process.pid, "SIGTERM")
    if (process.send !== undefined) process.once("disconnect", onDisconnect)
    return onDisconnect
  }),
  (onDisconnect) => Effect.sync(() => void process.removeListener("disconnect", onDisconnect))
)

/** Tells the operator what the first signal does. */
const announceDrain = (drainTimeout: Duration.Duration) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const onSignal = (signal: NodeJS.Signals) =>
        process.stderr.write(
          `hyrex: ${signal}: draining in-flight tasks for up to ${Duration.format(drainTimeout)}; send it again to exit at once\n`
        )
      process.once("SIGINT", onSignal)
      process.once("SIGTERM", onSignal)
      return onSignal
    }),
    (onSignal) =>
      Effect.sync(() => {
        process.removeListener("SIGINT", onSignal)
        process.removeListener("SIGTERM", onSignal)
      })
  )

/** `hyrex worker <module> [--queues a,b] [--concurrency n] [--lease-ttl 15s] [--drain-timeout 30s] [--name n] …` */
export const command = Command.make("worker", {
  ...Database.options,
  module: Args.text({ name: "module" }).pipe(
    Args.withDescription("a .ts or .js file exporting `registry` (or a default export) made with Registry.make")
  ),
  queues: Options.text("queues").pipe(
    Options.withPseudoName("a,b"),
    Options.withDescription("comma separated queues to serve (default: every queue of the registry)"),
    Options.optional
  ),
  concurrency: Options.text("concurrency").pipe(
    Options.withPseudoName("n"),
    Options.withDescription("in-flight tasks at most (default 10)"),
    Options.optional
  ),
  prefetch: Options.text("prefetch").pipe(
    Options.withPseudoName("n"),
    Options.withDescription("claimed tasks held waiting for a slot, at most (default 40 x concurrency; 0: none)"),
    Options.optional
  ),
  leaseTtl: durationOption("lease-ttl", "how long a claim or renewal holds a task (default 15s)"),
  heartbeatInterval: durationOption("heartbeat-interval", "how often leases are renewed (default lease-ttl / 3)"),
  pollInterval: durationOption("poll-interval", "how often an idle worker looks for work (default 1s)"),
  drainTimeout: durationOption("drain-timeout", "how long a stopping worker lets tasks finish (default 30s)"),
  name: Options.text("name").pipe(Options.withPseudoName("name"), Options.withDescription("worker name (default host:pid)"), Options.optional),
  maxConnections: Options.text("max-connections").pipe(
    Options.withPseudoName("n"),
    Options.withDescription("size of the worker's connection pool (default 10, or HYREX_MAX_CONNECTIONS)"),
    Options.optional
  ),
  noMigrate: Options.boolean("no-migrate").pipe(
    Options.withDescription(
      "do not create or upgrade the schema at start, for roles without CREATE (also HYREX_MIGRATE=false); run `hyrex migrate` first"
    )
  )
}, (flags) =>
  Effect.gen(function*() {
    const target = yield* Database.target(flags)
    const fromEnv = yield* WorkerConfig.fromEnv.pipe(
      Effect.mapError((error) => new CliError({ message: `invalid worker setting in the environment: ${oneLine(String(error))}` }))
    )
    const queues = Option.map(flags.queues, Input.commaList)
    if (Option.isSome(queues) && queues.value.length === 0) {
      return yield* new CliError({ message: "--queues: name at least one queue" })
    }
    // Flags win over the environment (HYREX_CONCURRENCY, HYREX_LEASE_TTL, …).
    const options: WorkerConfig.WorkerOptions = {
      ...fromEnv,
      queues: Option.getOrUndefined(queues) ?? fromEnv.queues,
      concurrency: (yield* Input.optionalInteger("concurrency", 1, flags.concurrency)) ?? fromEnv.concurrency,
      prefetch: (yield* Input.optionalInteger("prefetch", 0, flags.prefetch)) ?? fromEnv.prefetch,
      leaseTtl: (yield* Input.optionalDuration("lease-ttl", flags.leaseTtl)) ?? fromEnv.leaseTtl,
      heartbeatInterval: (yield* Input.optionalDuration("heartbeat-interval", flags.heartbeatInterval)) ??
        fromEnv.heartbeatInterval,
      pollInterval: (yield* Input.optionalDuration("poll-interval", flags.pollInterval)) ?? fromEnv.pollInterval,
      drainTimeout: (yield* Input.optionalDuration("drain-timeout", flags.drainTimeout)) ?? fromEnv.drainTimeout,
      name: Option.getOrUndefined(flags.name) ?? fromEnv.name
    }
    const maxConnections = yield* Input.optionalInteger("max-connections", 1, flags.maxConnections)
    const fromEnvStore = yield* Config.all({
      migrate: Config.boolean("HYREX_MIGRATE").pipe(Config.withDefault(true)),
      maxConnections: Config.option(Config.integer("HYREX_MAX_CONNECTIONS"))
    }).pipe(
      Effect.mapError((error) => new CliError({ message: `invalid setting in the environment: ${oneLine(String(error))}` }))
    )

    process.env["HYREX_SCHEMA"] = target.schema
    const module = yield* WorkerModule.load(flags.module)
    // Checked before connecting, so that a bad flag says so without a database.
    const config = yield* WorkerConfig.resolve(options, module.registry.queues)
    const pool = {
      maxConnections: maxConnections ?? Option.getOrUndefined(fromEnvStore.maxConnections) ?? 10,
      applicationName: `hyrex-worker ${config.name}`
    }

    // Handler requirements are only known at run time: a missing service fails that attempt (kind "defect").
    const worker: Effect.Effect<never, ConfigurationError | StoreError, TaskStore> = Worker.run(module.registry, options)
    const run = module.layer === undefined ? worker : Effect.provide(worker, module.layer)
    yield* Effect.gen(function*() {
      yield* Effect.logInfo(
        `running ${module.path} (${Array.from(module.registry.tasks.keys()).join(", ")}) on ${
          redactUrl(target.url)
        } schema ${target.schema}`
      )
      yield* announceDrain(config.drainTimeout)
      yield* stopWithParent
      return yield* run
    }).pipe(
      // Connected (and migrated) first: an unreachable database is one line of error, nothing else.
      Effect.provide(
        fromEnvStore.migrate && !flags.noMigrate
          ? Database.storeLayer(target, { ...pool, migrate: true })
          // Without migrating, the schema must already be there: say so clearly.
          : Database.existingStore(target, pool)
      )
    )
  }).pipe(Effect.scoped)).pipe(
    Command.withDescription("Run a worker for the tasks of a module until SIGTERM / SIGINT (then drain)")
  )
