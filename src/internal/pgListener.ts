/**
 * LISTEN on a dedicated connection that comes back after Postgres restarts.
 * Notifications are only hints (workers also poll), so a gap while it
 * reconnects costs at most one poll interval.
 */
import type { PgClientConfig } from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
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

/** Payloads sent to `channel`, across reconnects. Never fails. */
export const listen = (config: PgClientConfig, channel: string): Stream.Stream<string> =>
  Stream.asyncPush<string, unknown>((emit) =>
    Effect.gen(function*() {
      const client = yield* connect(config)
      client.on("notification", (message) => {
        if (message.channel === channel) emit.single(message.payload ?? "")
      })
      // A dropped connection ends the stream with an error, so it is retried.
      client.on("error", (error) => emit.fail(error))
      client.on("end", () => emit.fail(new Error("listener connection ended")))
      yield* Effect.tryPromise(() => client.query(`LISTEN ${client.escapeIdentifier(channel)}`))
    })
  ).pipe(
    Stream.retry(Schedule.exponential("200 millis").pipe(Schedule.either(Schedule.spaced("5 seconds")))),
    Stream.catchAll(() => Stream.empty)
  )
