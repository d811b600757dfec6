/**
 * The one place Postgres tests get a database from.
 *
 * The server is chosen once per test-file process, in this order, and the
 * choice is printed as a single `[TestDatabase] ...` line on stderr:
 *
 * 1. `env`: the server in `DATABASE_URL` (its database is only used as the
 *    maintenance database).
 * 2. `container`: a `@testcontainers/postgresql` container, if a container
 *    runtime answers within {@link CONTAINER_PROBE_TIMEOUT}.
 * 3. `embedded`: PGlite (Postgres compiled to WASM, in process) served over
 *    `@electric-sql/pglite-socket` on a free loopback port, so the same
 *    `PgClient` (node-postgres) and subprocesses can talk to it.
 *
 * `HYREX_TEST_DB=env|container|embedded` forces a kind (default `auto`);
 * `HYREX_TEST_PG_IMAGE` picks the container image.
 *
 * Isolation: every {@link database} / {@link databaseUrl} is a fresh database
 * (`CREATE DATABASE hyrex_test_<random>`, dropped `WITH (FORCE)` when its
 * scope closes); on `embedded` it is a fresh PGlite instance (restored from a
 * template data directory, ~0.5 s; the template is made once by initdb, ~3 s,
 * and cached in the OS temp dir, see {@link embeddedTemplateFile}) behind its
 * own socket server, stopped when its scope closes.
 *
 * Read {@link Capabilities} before relying on session semantics: on `embedded`
 * all connections share one Postgres session.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as RcRef from "effect/RcRef"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { readFile, rename, rm, writeFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { redactUrl } from "../../src/cli/CliError.js"

// ---------------------------------------------------------------------------
// Public model
// ---------------------------------------------------------------------------

/** Where the Postgres server used by the tests comes from. */
export type Kind = "env" | "container" | "embedded"

/** What the current {@link Kind} supports; gate tests on it (`it.effect.skipIf`). */
export interface Capabilities {
  /**
   * Every connection is its own backend session: transactions, row locks
   * (`FOR UPDATE SKIP LOCKED`), advisory locks, `SET` and temp tables are
   * per connection. `false` on `embedded`: all connections share ONE session
   * and a transaction opened on one connection blocks every other connection
   * until it ends.
   */
  readonly concurrentSessions: boolean
  /** A `LISTEN`ing connection receives `NOTIFY`s sent from other connections (`PgClient.listen`). */
  readonly listenNotify: boolean
  /** `statement_timeout` and query cancellation (`pg_cancel_backend`) take effect. */
  readonly cancellation: boolean
}

/** The capabilities of a {@link Kind}. */
export const capabilitiesOf = (kind: Kind): Capabilities =>
  kind === "embedded"
    ? { concurrentSessions: false, listenNotify: false, cancellation: false }
    : { concurrentSessions: true, listenNotify: true, cancellation: true }

/** A fresh, isolated database. */
export interface DatabaseInfo {
  /** Connection URL (plain string, usable by subprocesses). */
  readonly url: string
  /** Database name (`hyrex_test_<random>`; `postgres` on `embedded`). */
  readonly name: string
  readonly kind: Kind
}

/** The database behind {@link layer}; use its `url` to point subprocesses at the same database. */
export class TestDatabase extends Context.Tag("hyrex/test/TestDatabase")<TestDatabase, DatabaseInfo>() {}

/** `DATABASE_URL` (or a server URL given to {@link databaseOn}) cannot be connected to. */
export class ServerUnreachable extends Data.TaggedError("ServerUnreachable")<{
  readonly message: string
  readonly url: string
  readonly cause: unknown
}> {}

/** A container runtime was found (or forced) but the Postgres container could not be started. */
export class ContainerStartFailed extends Data.TaggedError("ContainerStartFailed")<{
  readonly message: string
  readonly image: string
  readonly cause: unknown
}> {}

/** The embedded PGlite / pglite-socket server could not be started. */
export class EmbeddedStartFailed extends Data.TaggedError("EmbeddedStartFailed")<{
  readonly message: string
  readonly cause: unknown
}> {}

/** The server was reachable but `CREATE DATABASE` failed (e.g. the role lacks `CREATEDB`). */
export class DatabaseCreateFailed extends Data.TaggedError("DatabaseCreateFailed")<{
  readonly message: string
  readonly url: string
  readonly database: string
  readonly cause: unknown
}> {}

/** `HYREX_TEST_DB` / `DATABASE_URL` / `HYREX_TEST_PG_IMAGE` are invalid. */
export class TestDatabaseConfigError extends Data.TaggedError("TestDatabaseConfigError")<{
  readonly message: string
  readonly cause?: ConfigError.ConfigError | undefined
}> {}

/** Every way getting a test database can fail. */
export type TestDatabaseError =
  | ServerUnreachable
  | ContainerStartFailed
  | EmbeddedStartFailed
  | DatabaseCreateFailed
  | TestDatabaseConfigError

// ---------------------------------------------------------------------------
// Tunables
// ---------------------------------------------------------------------------

/** Upper bound for detecting a container runtime (it fails in milliseconds when there is none). */
export const CONTAINER_PROBE_TIMEOUT: Duration.Duration = Duration.seconds(5)

/** How long the container is kept after its last user released it, so consecutive layers reuse it. */
export const CONTAINER_LINGER: Duration.Duration = Duration.seconds(10)

/** Default `PgClient` pool size of {@link layer}. */
export const DEFAULT_MAX_CONNECTIONS = 10

/**
 * Connections the embedded socket server accepts. They are multiplexed onto
 * PGlite's single session (queries are queued; a connection's open
 * transaction is run to completion before other connections are served).
 */
export const EMBEDDED_MAX_CONNECTIONS = 64

const DEFAULT_IMAGE = "postgres:17-alpine"

const CONNECT_TIMEOUT = Duration.seconds(5)

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

/**
 * Tests run under `TestClock`, where timeouts and sleeps never fire unless the
 * test adjusts the clock. Everything here that waits on real time uses this.
 */
const liveClock = Clock.make()
const live = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.withClock(self, liveClock)

const announce = (line: string): Effect.Effect<void> =>
  Effect.sync(() => console.error(`[TestDatabase] ${line} (pid ${process.pid})`))

const warn = (line: string): Effect.Effect<void> => Effect.sync(() => console.error(`[TestDatabase] WARNING: ${line}`))

const describeCause = (cause: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = cause
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth++) {
    if (typeof current === "object") {
      const record = current as { readonly message?: unknown; readonly code?: unknown; readonly cause?: unknown }
      const message = typeof record.message === "string" && record.message !== "" ? record.message : undefined
      const code = typeof record.code === "string" ? record.code : undefined
      const text = message ?? code
      if (text !== undefined && !parts.includes(text)) parts.push(text)
      current = record.cause
    } else {
      parts.push(String(current))
      current = undefined
    }
  }
  return parts.length === 0 ? String(cause) : parts.join(": ")
}

const withDatabaseName = (serverUrl: string, database: string): string => {
  const parsed = new URL(serverUrl)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** Name of the database a connection URL points at. */
export const databaseNameOf = (url: string): string => decodeURIComponent(new URL(url).pathname.replace(/^\//, ""))

/** Random, unique across parallel processes (not `effect/Random`: it is seeded under `TestRandom`). */
const freshDatabaseName = (): string => `hyrex_test_${randomBytes(8).toString("hex")}`

const quoteIdent = (name: string): string => `"${name.replace(/"/g, "\"\"")}"`

type Origin = "DATABASE_URL" | "container" | "argument"

/**
 * A scoped `PgClient` to any URL (e.g. a second, independent client on a test
 * database), with `Reactivity` provided and a real-time connect timeout (5 s).
 * Defaults to {@link DEFAULT_MAX_CONNECTIONS}; the pool connects lazily. Avoid
 * `maxConnections: 1`: interrupting a query makes `PgClient` cancel it through
 * a second pool connection, which with one connection waits for the query.
 */
export const makeClient = (
  url: string,
  options: LayerOptions = {}
): Effect.Effect<PgClient.PgClient, SqlError, Scope.Scope> =>
  PgClient.make({
    maxConnections: DEFAULT_MAX_CONNECTIONS,
    connectTimeout: CONNECT_TIMEOUT,
    ...options,
    url: Redacted.make(url)
  }).pipe(Effect.provide(Reactivity.layer), live)

const unreachableMessage = (url: string, origin: Origin, cause: unknown): string =>
  origin === "DATABASE_URL"
    ? `DATABASE_URL is set (${redactUrl(url)}) but connecting to it failed: ${describeCause(cause)}. ` +
      "Start that server, fix DATABASE_URL, or unset it to use a container or the embedded PGlite."
    : `Cannot connect to the Postgres server ${redactUrl(url)} (${origin}): ${describeCause(cause)}`

/** Run `f` on a short-lived single connection to `url`; connection failures become `ServerUnreachable`. */
const withMaintenance = <A>(
  url: string,
  origin: Origin,
  f: (sql: PgClient.PgClient) => Effect.Effect<A, SqlError>
): Effect.Effect<A, ServerUnreachable | SqlError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const sql = yield* makeClient(url, { maxConnections: 1, applicationName: "hyrex-test-maintenance" }).pipe(
        Effect.mapError((cause) =>
          new ServerUnreachable({
            url: redactUrl(url),
            cause,
            message: unreachableMessage(url, origin, cause)
          })
        )
      )
      return yield* f(sql)
    })
  )

/** Create a fresh database on a running server; drop it (WITH (FORCE)) when the scope closes. */
const serverDatabase = (
  serverUrl: string,
  origin: Origin,
  kind: Kind
): Effect.Effect<DatabaseInfo, ServerUnreachable | DatabaseCreateFailed, Scope.Scope> => {
  const name = freshDatabaseName()
  return Effect.acquireRelease(
    withMaintenance(serverUrl, origin, (sql) => sql.unsafe(`CREATE DATABASE ${quoteIdent(name)}`)).pipe(
      Effect.catchTag("SqlError", (cause) =>
        Effect.fail(
          new DatabaseCreateFailed({
            url: redactUrl(serverUrl),
            database: name,
            cause,
            message: `CREATE DATABASE ${name} failed on ${redactUrl(serverUrl)}: ${describeCause(cause)}${
              /permission denied/i.test(describeCause(cause)) ? " (the role in the URL needs CREATEDB)" : ""
            }`
          })
        )),
      Effect.as<DatabaseInfo>({ url: withDatabaseName(serverUrl, name), name, kind })
    ),
    () =>
      withMaintenance(serverUrl, origin, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`))
        .pipe(
          Effect.timeout(Duration.seconds(30)),
          Effect.catchAll((error) => warn(`could not drop test database ${name}: ${describeCause(error)}`)),
          live
        )
  )
}

/**
 * Create a fresh database on the server at `serverUrl` (any database of it works
 * as maintenance database) and drop it when the scope closes. This is what the
 * `env` and `container` kinds use; the result reports kind `env`.
 */
export const databaseOn = (
  serverUrl: string
): Effect.Effect<DatabaseInfo, ServerUnreachable | DatabaseCreateFailed, Scope.Scope> =>
  serverDatabase(serverUrl, "argument", "env")

// --- kind resolution (once per process) -------------------------------------

interface Settings {
  readonly databaseUrl: Option.Option<string>
  readonly force: "auto" | Kind
  readonly image: string
}

const settings: Effect.Effect<Settings, TestDatabaseConfigError> = Config.all({
  databaseUrl: Config.option(Config.string("DATABASE_URL")).pipe(
    Config.map(Option.filter((url) => url.trim() !== ""))
  ),
  force: Config.literal("auto", "env", "container", "embedded")("HYREX_TEST_DB").pipe(Config.withDefault("auto")),
  image: Config.nonEmptyString("HYREX_TEST_PG_IMAGE").pipe(Config.withDefault(DEFAULT_IMAGE))
}).pipe(
  Effect.mapError((cause) => new TestDatabaseConfigError({ cause, message: `Invalid test database settings: ${cause}` }))
)

interface Resolved {
  readonly kind: Kind
  /** Server URL for `env`. */
  readonly serverUrl: string
  readonly image: string
}

/** Ask testcontainers for a container runtime; `Left(reason)` when there is none. */
const probeContainerRuntime: Effect.Effect<Either.Either<string, string>> = Effect.tryPromise({
  try: () => import("testcontainers"),
  catch: (cause) => `testcontainers could not be loaded: ${describeCause(cause)}`
}).pipe(
  Effect.flatMap((testcontainers) =>
    Effect.tryPromise({ try: () => testcontainers.getContainerRuntimeClient(), catch: describeCause }).pipe(
      Effect.timeoutFail({
        duration: CONTAINER_PROBE_TIMEOUT,
        onTimeout: () => `no answer within ${Duration.format(CONTAINER_PROBE_TIMEOUT)}`
      })
    )
  ),
  Effect.map((client) =>
    `${client.info.containerRuntime.host}, server ${client.info.containerRuntime.serverVersion ?? "?"}`
  ),
  Effect.either,
  live
)

const resolveUncached: Effect.Effect<Resolved, TestDatabaseError> = Effect.gen(function*(): Effect.fn.Return<
  Resolved,
  TestDatabaseError
> {
  const { databaseUrl, force, image } = yield* settings
  if (force === "env" || (force === "auto" && Option.isSome(databaseUrl))) {
    if (Option.isNone(databaseUrl)) {
      return yield* new TestDatabaseConfigError({ message: "HYREX_TEST_DB=env but DATABASE_URL is not set" })
    }
    yield* announce(`using DATABASE_URL ${redactUrl(databaseUrl.value)}`)
    return { kind: "env", serverUrl: databaseUrl.value, image }
  }
  if (force === "embedded") {
    yield* announce("using embedded PGlite over pglite-socket (HYREX_TEST_DB=embedded)")
    return { kind: "embedded", serverUrl: "", image }
  }
  const [elapsed, probe] = yield* Effect.timed(probeContainerRuntime)
  const ms = Math.round(Duration.toMillis(elapsed))
  if (Either.isRight(probe)) {
    yield* announce(`using a ${image} container (container runtime ${probe.right}, detected in ${ms} ms)`)
    return { kind: "container", serverUrl: "", image }
  }
  if (force === "container") {
    return yield* new ContainerStartFailed({
      image,
      cause: probe.left,
      message: `HYREX_TEST_DB=container but no container runtime was found (${probe.left})`
    })
  }
  yield* announce(
    `no container runtime (${probe.left}; probed in ${ms} ms), using embedded PGlite over pglite-socket`
  )
  return { kind: "embedded", serverUrl: "", image }
}).pipe(live)

const resolve: Effect.Effect<Resolved, TestDatabaseError> = Effect.runSync(Effect.cached(resolveUncached))

/** The kind of server this process uses (decided once, then memoized). */
export const kind: Effect.Effect<Kind, TestDatabaseError> = Effect.map(resolve, (resolved) => resolved.kind)

/** The {@link Capabilities} of the server this process uses. */
export const capabilities: Effect.Effect<Capabilities, TestDatabaseError> = Effect.map(kind, capabilitiesOf)

// --- container (shared per process, reference counted, lingering) ------------

/**
 * A process-wide resource, acquired on first use and shared by every scope
 * using it at the same time. When the last user's scope closes, one extra
 * reference is held for `linger` (real time, also under `TestClock`) so that
 * sequential layers / tests in a file reuse it; then it is released. The
 * RcRef's own scope is never closed: if the process exits first, no finalizer
 * runs (testcontainers' Ryuk reaps the container).
 */
const shared = <A, E>(
  acquire: Effect.Effect<A, E, Scope.Scope>,
  linger: Duration.Duration
): Effect.Effect<A, E, Scope.Scope> => {
  const ref = Effect.runSync(
    Effect.flatMap(Scope.make(), (scope) => RcRef.make({ acquire }).pipe(Scope.extend(scope)))
  )
  return Effect.gen(function*() {
    const value = yield* RcRef.get(ref)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const lingering = yield* Scope.make()
        // Taken while our own reference is still held, so the count cannot hit zero in between.
        yield* RcRef.get(ref).pipe(Scope.extend(lingering), Effect.ignore)
        yield* Effect.sleep(linger).pipe(
          Effect.zipRight(Scope.close(lingering, Exit.void)),
          live,
          Effect.forkDaemon
        )
      })
    )
    return value
  })
}

const startContainer: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const { image } = yield* resolve
  const container = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { PostgreSqlContainer } = await import("@testcontainers/postgresql")
        return new PostgreSqlContainer(image)
          .withCommand(["postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
          .start()
      },
      catch: (cause) =>
        new ContainerStartFailed({
          image,
          cause,
          message: `Could not start a ${image} container: ${
            describeCause(cause)
          }. Set DATABASE_URL to use an existing server or HYREX_TEST_DB=embedded to use PGlite.`
        })
    }),
    (started) =>
      Effect.tryPromise(() => started.stop()).pipe(
        Effect.timeout(Duration.seconds(30)),
        Effect.catchAll((error) => warn(`could not stop the Postgres container: ${describeCause(error)}`)),
        live
      )
  )
  return container.getConnectionUri()
}).pipe(live)

/** The container's server URL for as long as the scope is open (see {@link shared}). */
const containerServer: Effect.Effect<string, TestDatabaseError, Scope.Scope> = shared(startContainer, CONTAINER_LINGER)

// --- embedded (PGlite over pglite-socket) -------------------------------------

interface Template {
  readonly dataDir: Blob
  readonly fromCache: boolean
}

/**
 * Where a freshly initialised PGlite data directory is cached between processes
 * (initdb takes ~3 s, restoring the tarball ~0.5 s). Keyed by the PGlite version;
 * `undefined` if the version cannot be read.
 */
export const embeddedTemplateFile: string | undefined = (() => {
  try {
    const entry = createRequire(import.meta.url).resolve("@electric-sql/pglite")
    const pkg: unknown = JSON.parse(readFileSync(join(dirname(entry), "..", "package.json"), "utf8"))
    const version = typeof pkg === "object" && pkg !== null && "version" in pkg ? pkg.version : undefined
    return typeof version === "string" ? join(tmpdir(), `hyrex-test-pglite-${version}-template.tar`) : undefined
  } catch {
    return undefined
  }
})()

const makeTemplate: Effect.Effect<Template, EmbeddedStartFailed> = Effect.tryPromise({
  try: async (): Promise<Template> => {
    const file = embeddedTemplateFile
    if (file !== undefined) {
      const cached = await readFile(file).catch(() => undefined)
      if (cached !== undefined) return { dataDir: new Blob([cached], { type: "application/x-tar" }), fromCache: true }
    }
    const { PGlite } = await import("@electric-sql/pglite")
    const db = await PGlite.create()
    let dataDir: Blob
    try {
      dataDir = await db.dumpDataDir("none")
    } finally {
      await db.close()
    }
    if (file !== undefined) {
      // Atomic publish: concurrent processes may race, each rename installs a complete file.
      const partial = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`
      await writeFile(partial, new Uint8Array(await dataDir.arrayBuffer()))
        .then(() => rename(partial, file))
        .catch(() => rm(partial, { force: true }))
    }
    return { dataDir, fromCache: false }
  },
  catch: (cause) => new EmbeddedStartFailed({ cause, message: `Could not initialise PGlite: ${describeCause(cause)}` })
})

/** The template, memoized per process; invalidated (and the file removed) if a cached one turns out unusable. */
const [embeddedTemplate, invalidateEmbeddedTemplate] = Effect.runSync(
  Effect.cachedInvalidateWithTTL(makeTemplate, Duration.infinity)
)

const startPglite = (dataDir: Blob) =>
  Effect.tryPromise({
    try: async () => {
      const { PGlite } = await import("@electric-sql/pglite")
      return PGlite.create({ loadDataDir: dataDir })
    },
    catch: (cause): unknown => cause
  })

const embeddedDatabase: Effect.Effect<DatabaseInfo, EmbeddedStartFailed, Scope.Scope> = Effect.gen(function*() {
  const fail = (what: string) => (cause: unknown) =>
    new EmbeddedStartFailed({ cause, message: `Could not ${what}: ${describeCause(cause)}` })
  const template = yield* embeddedTemplate
  const db = yield* Effect.acquireRelease(
    startPglite(template.dataDir).pipe(
      Effect.catchAll((error) =>
        template.fromCache && embeddedTemplateFile !== undefined
          ? Effect.gen(function*() {
            yield* warn(`discarding unusable PGlite template ${embeddedTemplateFile}: ${describeCause(error)}`)
            yield* Effect.tryPromise(() => rm(embeddedTemplateFile, { force: true })).pipe(Effect.ignore)
            yield* invalidateEmbeddedTemplate
            const fresh = yield* embeddedTemplate
            return yield* startPglite(fresh.dataDir)
          })
          : Effect.fail(error)
      ),
      Effect.mapError(fail("start PGlite"))
    ),
    (db) => Effect.tryPromise(() => db.close()).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore, live)
  )
  const server = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket")
        const server = new PGLiteSocketServer({
          db,
          host: "127.0.0.1",
          port: 0,
          maxConnections: EMBEDDED_MAX_CONNECTIONS
        })
        await server.start()
        return server
      },
      catch: fail("start the pglite-socket server")
    }),
    (server) => Effect.tryPromise(() => server.stop()).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore, live)
  )
  return {
    url: `postgresql://postgres:postgres@${server.getServerConn()}/postgres?sslmode=disable`,
    name: "postgres",
    kind: "embedded"
  } satisfies DatabaseInfo
})

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/** A fresh, isolated database (see the module docs), removed when the scope closes. */
export const database: Effect.Effect<DatabaseInfo, TestDatabaseError, Scope.Scope> = Effect.gen(function*() {
  const resolved = yield* resolve
  switch (resolved.kind) {
    case "env":
      return yield* serverDatabase(resolved.serverUrl, "DATABASE_URL", "env")
    case "container": {
      const serverUrl = yield* containerServer
      return yield* serverDatabase(serverUrl, "container", "container")
    }
    case "embedded":
      return yield* embeddedDatabase
  }
})

/** The URL of a fresh, isolated database, removed when the scope closes. */
export const databaseUrl: Effect.Effect<string, TestDatabaseError, Scope.Scope> = Effect.map(
  database,
  (info) => info.url
)

/** Provides {@link TestDatabase} (a fresh database) without a client. */
export const layerDatabase: Layer.Layer<TestDatabase, TestDatabaseError> = Layer.scoped(TestDatabase, database)

/** `PgClient` settings {@link layerWith} accepts (everything but where to connect). */
export type LayerOptions = Omit<
  PgClient.PgClientConfig,
  "url" | "host" | "port" | "path" | "database" | "username" | "password" | "ssl" | "stream"
>

/**
 * A `PgClient` on a fresh database, plus the {@link TestDatabase} it points at.
 * Defaults: `maxConnections` {@link DEFAULT_MAX_CONNECTIONS}, connect timeout 5 s.
 */
export const layerWith = (
  options: LayerOptions = {}
): Layer.Layer<TestDatabase | PgClient.PgClient | SqlClient.SqlClient, TestDatabaseError | SqlError> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const info = yield* TestDatabase
      const client = yield* makeClient(info.url, { maxConnections: DEFAULT_MAX_CONNECTIONS, ...options })
      return Context.make(PgClient.PgClient, client).pipe(Context.add(SqlClient.SqlClient, client))
    })
  ).pipe(Layer.provideMerge(layerDatabase))

/** {@link layerWith} with default options. */
export const layer: Layer.Layer<TestDatabase | PgClient.PgClient | SqlClient.SqlClient, TestDatabaseError | SqlError> =
  layerWith()
