/**
 * A TCP proxy on 127.0.0.1 (random port) between one worker and Postgres, to
 * put a network fault on that worker's link only.
 *
 * - `cut("blackhole")`: stop forwarding in both directions without closing
 *   anything, and hold new connections open without forwarding: what a real
 *   partition looks like (requests hang, nothing errors).
 * - `cut("reset")`: destroy every connection and refuse new ones at once.
 * - `heal()`: forward again. Bytes held during a black hole are delivered
 *   then (as TCP retransmission would), unless `heal({ dropHeld: true })`
 *   destroys the held connections instead (they "timed out").
 * - `latency(ms)`: delay every chunk by `ms` in each direction.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"

/** The state of the link. */
type LinkState = "open" | "blackhole" | "reset"

/** A proxy, open for as long as its scope. */
export interface Proxy {
  readonly port: number
  /** `url` with its host and port replaced by the proxy's. */
  readonly via: (url: string) => string
  readonly cut: (mode: "blackhole" | "reset") => Effect.Effect<void>
  readonly heal: (options?: { readonly dropHeld?: boolean }) => Effect.Effect<void>
  readonly latency: (ms: number) => Effect.Effect<void>
}

interface Pair {
  readonly client: net.Socket
  readonly upstream: net.Socket
}

/** Starts a proxy to `target` (a Postgres URL: its host and port are used). */
export const make = (target: string): Effect.Effect<Proxy, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const { hostname, port: targetPort } = new URL(target)
    const pairs = new Set<Pair>()
    let state: LinkState = "open"
    let delayMs = 0

    const forward = (from: net.Socket, to: net.Socket) =>
      from.on("data", (chunk) => {
        if (delayMs === 0) to.write(chunk)
        else setTimeout(() => to.destroyed || to.write(chunk), delayMs)
      })

    const server = net.createServer({ pauseOnConnect: true }, (client) => {
      if (state === "reset") {
        client.destroy()
        return
      }
      const upstream = net.connect({ host: hostname, port: Number(targetPort || 5432) })
      upstream.pause()
      const pair: Pair = { client, upstream }
      pairs.add(pair)
      const close = () => {
        pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      client.on("error", close).on("close", close)
      upstream.on("error", close).on("close", close)
      forward(client, upstream)
      forward(upstream, client)
      if (state === "open") {
        client.resume()
        upstream.resume()
      }
    })

    yield* Effect.async<void, Error>((resume) => {
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(0, "127.0.0.1", () => resume(Effect.void))
    })
    const address = server.address()
    if (address === null || typeof address === "string") return yield* Effect.fail(new Error("proxy has no TCP address"))
    yield* Effect.addFinalizer(() =>
      Effect.async<void>((resume) => {
        for (const pair of pairs) {
          pair.client.destroy()
          pair.upstream.destroy()
        }
        server.close(() => resume(Effect.void))
      })
    )

    return {
      port: address.port,
      via: (url) => {
        const parsed = new URL(url)
        parsed.hostname = "127.0.0.1"
        parsed.port = String(address.port)
        return parsed.toString()
      },
      cut: (mode) =>
        Effect.sync(() => {
          state = mode
          for (const pair of pairs) {
            if (mode === "reset") {
              pair.client.destroy()
              pair.upstream.destroy()
            } else {
              pair.client.pause()
              pair.upstream.pause()
            }
          }
        }),
      heal: (options = {}) =>
        Effect.sync(() => {
          const held = state === "blackhole"
          state = "open"
          for (const pair of pairs) {
            if (held && options.dropHeld === true) {
              pair.client.destroy()
              pair.upstream.destroy()
            } else {
              pair.client.resume()
              pair.upstream.resume()
            }
          }
        }),
      latency: (ms) =>
        Effect.sync(() => {
          delayMs = ms
        })
    }
  })
