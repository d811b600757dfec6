/**
 * One session of the pool kept for one kind of statement: a store's claims.
 *
 * A session pays for its first claim (about 20 ms on the server: it reads
 * the catalogs, compiles the claim functions and plans their statements),
 * and a pool hands a statement whichever session is free: a claim that
 * finds every session busy with completions or heartbeats opens a new one,
 * and the worker's next batch waits for its first claim. Pinned, every claim
 * runs on the session the last one warmed, and the others serve everything
 * else.
 *
 * The session is reserved from the pool by the first claim and given back
 * once `idleTimeToLive` passes without one (a fiber of the store's scope
 * looks every `idleTimeToLive`), or when the store closes. A statement that
 * fails on it runs again through the pool, then gives the session back (a
 * broken connection is dropped by the pool): after a network cut or a
 * server restart the pinned connection is the one left broken, where the
 * pool has dropped its own. Running a claim again risks nothing a failed
 * claim does not: a claim whose answer was lost leaves its tasks leased
 * until the lease expires. An interrupted statement gives the session back
 * too (it may still be running there). A statement that finds the session
 * busy (several workers on one store) goes through the pool.
 *
 * Statements run on the pinned session as `@effect/sql` runs those of a
 * transaction: with the connection in context (`TransactionConnection`), so
 * they keep their spans and the client's row transforms.
 *
 * The state is a few variables, not an `RcRef` and a semaphore: those added
 * about 100 µs to every claim (a scope, and a timer fiber started and
 * stopped per use), on the path of every idle worker's latency.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"

/** A session kept out of the pool for the statements given to `run`. */
export interface PinnedSession {
  /** Runs `statement` on the pinned session; through the pool while that session is busy, or when it failed there. */
  readonly run: <A, E, R>(statement: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
}

/** Keeps a session of `sql`'s pool for `run`, in the current scope; none is reserved until the first `run`. */
export const make = (
  sql: SqlClient.SqlClient,
  options: { readonly idleTimeToLive: Duration.DurationInput }
): Effect.Effect<PinnedSession, never, Scope.Scope> =>
  Effect.gen(function*() {
    const storeScope = yield* Effect.scope
    const idleMillis = Duration.toMillis(Duration.decode(options.idleTimeToLive))
    /** The reserved session and the scope that gives it back. */
    let held: { readonly connection: Connection; readonly scope: Scope.CloseableScope } | undefined
    let busy = false
    let lastUsed = 0

    const connection = Effect.suspend(() => {
      if (held !== undefined) return Effect.succeed(held.connection)
      return Effect.flatMap(Scope.fork(storeScope, ExecutionStrategy.sequential), (scope) =>
        Effect.map(
          Effect.onError(Scope.extend(sql.reserve, scope), (cause) => Scope.close(scope, Exit.failCause(cause))),
          (connection) => {
            held = { connection, scope }
            return connection
          }
        ))
    })
    const giveBack = Effect.suspend(() => {
      const session = held
      held = undefined
      return session === undefined ? Effect.void : Scope.close(session.scope, Exit.void)
    })

    // Given back after a while without claims.
    yield* Effect.clockWith((clock) =>
      Effect.suspend(() =>
        !busy && held !== undefined && clock.unsafeCurrentTimeMillis() - lastUsed >= idleMillis ? giveBack : Effect.void
      )
    ).pipe(
      Effect.repeat(Schedule.spaced(idleMillis)),
      Effect.forkScoped,
      Effect.interruptible
    )

    const onSession = <A, E, R>(statement: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
      Effect.flatMap(connection, (pinned) => Effect.provideService(statement, SqlClient.TransactionConnection, [pinned, 0])).pipe(
        Effect.onInterrupt(() => giveBack),
        // Given back once the statement ran again elsewhere: a session the
        // server ended can answer the statement with the server's farewell
        // before its client sees the connection close, and the pool would
        // hand it straight back to the retry.
        Effect.catchAll(() => Effect.ensuring(statement, giveBack))
      )
    const taken = Effect.sync(() => {
      busy = true
    })
    const free = Effect.clockWith((clock) =>
      Effect.sync(() => {
        busy = false
        lastUsed = clock.unsafeCurrentTimeMillis()
      })
    )

    return {
      run: (statement) => Effect.suspend(() => busy ? statement : Effect.acquireUseRelease(taken, () => onSession(statement), () => free))
    }
  })

/** What `run` is when a pool is too small to keep a session out of it: the statement itself. */
export const unpinned: PinnedSession = { run: (statement) => statement }
