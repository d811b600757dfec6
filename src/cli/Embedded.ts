/**
 * An embedded Postgres for `hyrex demo`: PGlite (Postgres compiled to WASM)
 * in this process, served over `@electric-sql/pglite-socket` on a loopback
 * port so that worker processes connect to it with node-postgres.
 *
 * PGlite has ONE session: every connection shares it, statements run one at
 * a time, and a connection's open transaction runs to its end before any
 * other connection is served. Row locks and advisory locks therefore never
 * block anyone (there is nobody else), which is safe only because nothing
 * runs concurrently; `LISTEN`/`NOTIFY` does not reach other connections, so
 * workers find work by polling.
 *
 * pglite-socket (0.2.17) switches between connections after any protocol
 * message unless PGlite is inside a `BEGIN` block, so one connection's
 * extended-query exchange (Parse, Bind, Describe, Execute … Sync) can be
 * interleaved with another's: `bind message supplies 6 parameters, but
 * prepared statement "" requires 1`, or a statement run with another
 * connection's parameters. {@link atomicExchanges} closes that gap.
 *
 * @since 0.1.0
 */
import type { PGlite } from "@electric-sql/pglite"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { readFile, rename, rm, writeFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { CliError, rootMessage } from "./CliError.js"

/** Connections the socket server accepts (they are multiplexed onto PGlite's one session). */
export const maxConnections = 64

/**
 * Where a freshly initialised data directory is cached (initdb takes a few
 * seconds, restoring the tarball half a second), keyed by PGlite's version.
 */
const templateFile: string | undefined = (() => {
  try {
    const entry = createRequire(import.meta.url).resolve("@electric-sql/pglite")
    const pkg: unknown = JSON.parse(readFileSync(join(dirname(entry), "..", "package.json"), "utf8"))
    const version = typeof pkg === "object" && pkg !== null && "version" in pkg ? pkg.version : undefined
    return typeof version === "string" ? join(tmpdir(), `hyrex-cli-pglite-${version}-template.tar`) : undefined
  } catch {
    return undefined
  }
})()

/** Message types of the extended query protocol that leave an exchange open until its Sync. */
const extendedQuery = new Set(["P", "B", "D", "E", "C", "H"].map((type) => type.charCodeAt(0)))
const sync = "S".charCodeAt(0)

/**
 * PGlite as the socket server should see it: "in a transaction" also from a
 * connection's first extended-query message to its Sync, so that the server
 * serves only that connection until the exchange is complete.
 */
export const atomicExchanges = (db: PGlite): PGlite => {
  let open = false
  return new Proxy(db, {
    get(target, property) {
      switch (property) {
        case "isInTransaction":
          return () => open || target.isInTransaction()
        case "execProtocolRawStream":
          return async (message: Uint8Array, options: Parameters<PGlite["execProtocolRawStream"]>[1]) => {
            const type = message[0] ?? 0
            if (extendedQuery.has(type)) open = true
            try {
              return await target.execProtocolRawStream(message, options)
            } finally {
              if (type === sync) open = false
            }
          }
        case "exec":
          // The server rolls back with `exec` when a connection drops mid-exchange.
          return (query: string, options?: Parameters<PGlite["exec"]>[1]) => {
            open = false
            return target.exec(query, options)
          }
      }
      // PGlite's methods use private fields: call them on PGlite itself, not on the proxy.
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === "function" ? value.bind(target) : value
    }
  })
}

const start = async () => {
  const { PGlite } = await import("@electric-sql/pglite")
  const cached = templateFile === undefined ? undefined : await readFile(templateFile).catch(() => undefined)
  if (cached !== undefined) {
    const db = await PGlite.create({ loadDataDir: new Blob([cached], { type: "application/x-tar" }) }).catch(async () => {
      // An unusable cache (another PGlite build wrote it): start afresh.
      await rm(templateFile!, { force: true })
      return undefined
    })
    if (db !== undefined) return db
  }
  const db = await PGlite.create()
  if (templateFile !== undefined) {
    const dump = await db.dumpDataDir("none")
    // Atomic publish: a concurrent process either sees a complete file or none.
    const partial = `${templateFile}.${process.pid}.${randomBytes(4).toString("hex")}`
    await writeFile(partial, new Uint8Array(await dump.arrayBuffer()))
      .then(() => rename(partial, templateFile))
      .catch(() => rm(partial, { force: true }))
  }
  return db
}

/** Starts PGlite and its socket server; both stop when the scope closes. Returns a connection URL. */
export const postgres: Effect.Effect<string, CliError, Scope.Scope> = Effect.gen(function*() {
  const db = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: start,
      catch: (cause) => new CliError({ message: `cannot start the embedded Postgres (PGlite): ${rootMessage(cause)}` })
    }),
    (db) => Effect.promise(() => db.close().catch(() => undefined)).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore)
  )
  const server = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket")
        const server = new PGLiteSocketServer({ db: atomicExchanges(db), host: "127.0.0.1", port: 0, maxConnections })
        await server.start()
        return server
      },
      catch: (cause) => new CliError({ message: `cannot serve the embedded Postgres on a socket: ${rootMessage(cause)}` })
    }),
    (server) => Effect.promise(() => server.stop().catch(() => undefined)).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore)
  )
  return `postgresql://postgres:postgres@${server.getServerConn()}/postgres?sslmode=disable`
})
