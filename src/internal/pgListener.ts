/**
 * LISTEN on a dedicated connection that comes back after Postgres restarts.
 * Notifications are only hints (workers also poll), so a gap while it
 * reconnects costs at most one poll interval.
 *
 * A notification is handed over from the connection's callback straight to
 * a `PubSub`: a wake-up is on the path of every idle worker's latency, and a
 * stream between the two (pushed, then shared) cost about 0.1 ms a hop.
 */
import type { PgClientConfig } from "@effect/sql-pg/PgClient"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as PubSub from "effect/PubSub"
import * as RcRef from "effect/RcRef"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import pg from "pg"

const connect = (config: PgClientConfig) =>
  Effect.acquireRelease(
    Effect.tryPromise(async () => {
      const client = new pg.Client({
        connectionString: config.url === undefined ? undefined : Redacted.value(config.url),
        host: config.host,
        port: config.port,
        database: config.database,
        user: config.username,
        password: config.password === undefined ? undefined : Redacted.value(config.password),
        application_name: "hyrex-listener",
        connectionTimeoutMillis: 5_000,
        keepAlive: true
      })
      client.on("error", () => {})
      await client.connect()
      return client
    }),
    // A graceful end waits for the server's answer; on a dead link it never
    // comes, so the socket is destroyed after a second.
    (client) =>
      Effect.promise(() =>
        Promise.race([
          client.end().catch(() => undefined),
          new Promise<void>((resolve) => setTimeout(resolve, 1_000).unref())
        ]).then(() => (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy())
      )
  )

/**
 * One connection's life: connects, LISTENs, hands each payload to `publish`,
 * and fails when the connection drops (so it is retried).
 */
const session = (config: PgClientConfig, channel: string, publish: (payload: string) => void) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* connect(config)
    const dropped = yield* Deferred.make<never, Error>()
    client.on("error", (error) => Deferred.unsafeDone(dropped, Exit.fail(error)))
    client.on("end", () => Deferred.unsafeDone(dropped, Exit.fail(new Error("listener connection ended"))))
    client.on("notification", (message) => {
      if (message.channel === channel) publish(message.payload ?? "")
    })
    yield* Effect.tryPromise(() => client.query(`LISTEN ${client.escapeIdentifier(channel)}`))
    return yield* Deferred.await(dropped)
  }))

/**
 * Payloads sent to `channel`, across reconnects; never fails. The connection
 * is opened when the first subscriber comes and closed when the last one
 * leaves (a producer alone never opens it).
 */
export const listen = (config: PgClientConfig, channel: string): Effect.Effect<Stream.Stream<string>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const payloads = yield* Effect.acquireRelease(PubSub.unbounded<string>(), PubSub.shutdown)
    const connection = yield* RcRef.make({
      acquire: session(config, channel, (payload) => payloads.unsafeOffer(payload)).pipe(
        Effect.retry(Schedule.exponential("200 millis").pipe(Schedule.either(Schedule.spaced("5 seconds")))),
        Effect.forkScoped
      )
    })
    // Subscribed before the connection is asked for: nothing it hears is missed.
    return Stream.unwrapScoped(Effect.gen(function*() {
      const subscription = yield* PubSub.subscribe(payloads)
      yield* RcRef.get(connection)
      return Stream.fromQueue(subscription)
    }))
  })
