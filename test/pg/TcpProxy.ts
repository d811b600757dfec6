/**
 * A TCP proxy on 127.0.0.1 (random port) in front of a Postgres server, so a
 * test can cut the network between a client and the database and heal it.
 *
 * - `cut("refuse")`: every open connection is destroyed (both sides see it
 *   close) and new connections are closed as soon as they are accepted.
 * - `cut("blackhole")`: every open connection is destroyed and new
 *   connections are accepted but never answered, as behind a dropped route:
 *   a client only gives up through its own connect timeout.
 * - `heal`: new connections are forwarded again; black-holed ones are closed
 *   so their clients fail fast and reconnect.
 *
 * Scoped: the server and every socket are closed with the scope.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"

/** How a cut proxy treats new connections. */
export type CutMode = "refuse" | "blackhole"

/** A running proxy. */
export interface TcpProxy {
  readonly port: number
  /** `url` (a Postgres URL) with its host and port replaced by the proxy's. */
  readonly urlFor: (url: string) => string
  /** Destroys every open connection; `mode` says what happens to new ones. */
  readonly cut: (mode: CutMode) => Effect.Effect<void>
  /** Forwards new connections again. */
  readonly heal: Effect.Effect<void>
  /** Connections forwarded so far, and how many are open now. */
  readonly stats: Effect.Effect<{ readonly forwarded: number; readonly open: number }>
}

/** Starts a proxy to `target` (host and port of the Postgres server). */
export const make = (target: { readonly host: string; readonly port: number }): Effect.Effect<TcpProxy, Error, Scope.Scope> =>
  Effect.gen(function*() {
    let mode: "open" | CutMode = "open"
    let forwarded = 0
    const pairs = new Set<{ readonly client: net.Socket; readonly upstream: net.Socket }>()
    const held = new Set<net.Socket>()

    const server = net.createServer((client) => {
      client.on("error", () => {})
      if (mode === "refuse") {
        client.destroy()
        return
      }
      if (mode === "blackhole") {
        held.add(client)
        client.on("close", () => held.delete(client))
        return
      }
      forwarded += 1
      const upstream = net.connect(target.port, target.host)
      upstream.on("error", () => {})
      const pair = { client, upstream }
      pairs.add(pair)
      const close = () => {
        pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      client.on("close", close)
      upstream.on("close", close)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    server.on("error", () => {})

    const port = yield* Effect.acquireRelease(
      Effect.async<number, Error>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(
            typeof address === "object" && address !== null
              ? Effect.succeed(address.port)
              : Effect.fail(new Error("the proxy has no TCP address"))
          )
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const pair of pairs) pair.client.destroy()
          for (const socket of held) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )

    const destroyOpen = () => {
      for (const pair of pairs) {
        pair.client.destroy()
        pair.upstream.destroy()
      }
      pairs.clear()
    }

    return {
      port,
      urlFor: (url) => {
        const parsed = new URL(url)
        parsed.hostname = "127.0.0.1"
        parsed.port = String(port)
        return parsed.toString()
      },
      cut: (cutMode) =>
        Effect.sync(() => {
          mode = cutMode
          destroyOpen()
        }),
      heal: Effect.sync(() => {
        mode = "open"
        for (const socket of held) socket.destroy()
        held.clear()
      }),
      stats: Effect.sync(() => ({ forwarded, open: pairs.size }))
    }
  })

/** The host and port a Postgres URL points at (default port 5432). */
export const targetOf = (url: string): { readonly host: string; readonly port: number } => {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: parsed.port === "" ? 5432 : Number(parsed.port) }
}
