import { describe, expect, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as TestDatabase from "./utils/TestDatabase.js"

// Decided once per process (and printed); needed at collection time for skipIf/runIf.
const kind = await Effect.runPromise(TestDatabase.kind)
const capabilities = TestDatabase.capabilitiesOf(kind)

/** Does a table named `name` exist in the database at `url`? */
const tableExists = (url: string, name: string) =>
  Effect.scoped(
    Effect.gen(function*() {
      const sql = yield* TestDatabase.makeClient(url)
      const rows = yield* sql<{ readonly exists: boolean }>`SELECT to_regclass(${name}) IS NOT NULL AS exists`
      return rows[0]?.exists === true
    })
  )

describe("TestDatabase", () => {
  it.effect("kind follows DATABASE_URL", () =>
    Effect.gen(function*() {
      const forced = process.env["HYREX_TEST_DB"]
      if (forced !== undefined && forced !== "auto") {
        expect(kind).toBe(forced)
      } else if ((process.env["DATABASE_URL"] ?? "") !== "") {
        expect(kind).toBe("env")
      } else {
        expect(["container", "embedded"]).toContain(kind)
      }
      expect(yield* TestDatabase.kind).toBe(kind)
    }))

  it.layer(TestDatabase.layer)("layer", (it) => {
    it.effect("connects and SELECT 1 works", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ readonly one: number }>`SELECT 1 AS one`
        expect(rows).toEqual([{ one: 1 }])
      }))

    it.effect("PgClient and TestDatabase point at the same fresh database", () =>
      Effect.gen(function*() {
        const pg = yield* PgClient.PgClient
        const info = yield* TestDatabase.TestDatabase
        expect(info.kind).toBe(kind)
        expect(TestDatabase.databaseNameOf(info.url)).toBe(info.name)
        const rows = yield* pg<{ readonly db: string }>`SELECT current_database() AS db`
        expect(rows[0]?.db).toBe(info.name)
        if (kind !== "embedded") expect(info.name).toMatch(/^hyrex_test_[0-9a-f]{16}$/)
        // The default pool is small.
        expect(pg.config.maxConnections).toBe(TestDatabase.DEFAULT_MAX_CONNECTIONS)
      }))

    it.effect("a subprocess-style second client on info.url sees the same data", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const info = yield* TestDatabase.TestDatabase
        yield* sql`CREATE TABLE shared_marker (id int)`
        expect(yield* tableExists(info.url, "shared_marker")).toBe(true)
      }))
  })

  it.layer(TestDatabase.layerWith({ maxConnections: 3 }))("layerWith", (it) => {
    it.effect("honours maxConnections", () =>
      Effect.gen(function*() {
        const pg = yield* PgClient.PgClient
        expect(pg.config.maxConnections).toBe(3)
        // Three queries in flight at once work.
        const results = yield* Effect.all(
          [pg`SELECT 1 AS n`, pg`SELECT 2 AS n`, pg`SELECT 3 AS n`],
          { concurrency: "unbounded" }
        )
        expect(results.map((rows) => rows[0]?.["n"])).toEqual([1, 2, 3])
      }))
  })

  it.scoped("two databaseUrl calls give isolated databases", () =>
    Effect.gen(function*() {
      const [first, second] = yield* Effect.all([TestDatabase.databaseUrl, TestDatabase.databaseUrl], {
        concurrency: 2
      })
      expect(first).not.toBe(second)
      yield* Effect.scoped(
        Effect.gen(function*() {
          const sql = yield* TestDatabase.makeClient(first)
          yield* sql`CREATE TABLE only_in_first (id int)`
        })
      )
      expect(yield* tableExists(first, "only_in_first")).toBe(true)
      expect(yield* tableExists(second, "only_in_first")).toBe(false)
    }))

  it.effect("the database is removed when its scope closes", () =>
    Effect.gen(function*() {
      const info = yield* Effect.scoped(
        Effect.gen(function*() {
          const info = yield* TestDatabase.database
          expect(yield* tableExists(info.url, "pg_class")).toBe(true)
          return info
        })
      )
      if (kind === "embedded") {
        // The PGlite instance and its socket server are gone.
        const exit = yield* Effect.exit(Effect.scoped(TestDatabase.makeClient(info.url)))
        expect(Exit.isFailure(exit)).toBe(true)
      } else {
        // Ask the same server (through another fresh database) whether it still exists.
        const exists = yield* Effect.scoped(
          Effect.gen(function*() {
            const sql = yield* TestDatabase.makeClient(yield* TestDatabase.databaseUrl)
            const rows = yield* sql<{ readonly n: number }>`
              SELECT count(*)::int AS n FROM pg_database WHERE datname = ${info.name}`
            return rows[0]?.n
          })
        )
        expect(exists).toBe(0)
      }
    }))

  it.effect("an unreachable server fails with ServerUnreachable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.scoped(TestDatabase.databaseOn("postgres://postgres:secret@127.0.0.1:1/postgres"))
      )
      expect(error._tag).toBe("ServerUnreachable")
      expect(error.message).toContain("127.0.0.1:1")
      expect(error.message).not.toContain("secret")
    }))

  describe("server semantics", () => {
    it.scoped.runIf(capabilities.concurrentSessions)("connections are separate sessions", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const a = yield* TestDatabase.makeClient(url)
        const b = yield* TestDatabase.makeClient(url)
        const pid = (sql: PgClient.PgClient) =>
          Effect.map(sql<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid`, (rows) => rows[0]?.pid)
        expect(yield* pid(a)).not.toBe(yield* pid(b))
        const lock = (sql: PgClient.PgClient) =>
          Effect.map(sql<{ readonly ok: boolean }>`SELECT pg_try_advisory_lock(42) AS ok`, (rows) => rows[0]?.ok)
        expect(yield* lock(a)).toBe(true)
        expect(yield* lock(b)).toBe(false)
      }))

    // Live clock: the test sleeps and times out in real time.
    it.scopedLive.runIf(capabilities.listenNotify)("PgClient.listen receives NOTIFY", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const sql = yield* TestDatabase.makeClient(url, { maxConnections: 2 })
        const received = yield* sql.listen("hyrex_test").pipe(Stream.take(1), Stream.runCollect, Effect.fork)
        // Keep notifying until the listener (which subscribes asynchronously) got one.
        // Not `sql.notify`: @effect/sql-pg 0.53 sends `NOTIFY chan, $1`, which Postgres rejects
        // (syntax error at or near "$1"); `pg_notify` takes parameters.
        yield* sql`SELECT pg_notify(${"hyrex_test"}, ${"hello"})`.pipe(
          Effect.zipRight(Effect.sleep("50 millis")),
          Effect.repeat({ until: () => received.unsafePoll() !== null }),
          Effect.timeout("10 seconds")
        )
        expect(Chunk.toReadonlyArray(yield* Fiber.join(received))).toEqual(["hello"])
      }))

    it.scoped.runIf(kind === "embedded")("embedded: all connections share one session", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const a = yield* TestDatabase.makeClient(url)
        const b = yield* TestDatabase.makeClient(url)
        const lock = (sql: PgClient.PgClient) =>
          Effect.map(sql<{ readonly ok: boolean }>`SELECT pg_try_advisory_lock(42) AS ok`, (rows) => rows[0]?.ok)
        expect(yield* lock(a)).toBe(true)
        // A real server would say false here.
        expect(yield* lock(b)).toBe(true)
      }))
  })
})
