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
 * The session is reserved from the pool while claims keep coming and given
 * back after `idleTimeToLive` without one. A statement that fails on it
 * gives it back (a broken connection is dropped by the pool) and runs again
 * through the pool: after a network cut or a server restart the pinned
 * connection is the one left broken, where the pool has dropped its own.
 * (Running a claim again risks nothing a failed claim does not: a claim
 * whose answer was lost leaves its tasks leased until the lease expires.)
 * One interrupted gives it back too: its statement may still be running.
 * A statement that finds the session busy (several workers on one store)
 * goes through the pool.
 *
 * Statements run on the pinned session as `@effect/sql` runs those of a
 * transaction: with the connection in context (`TransactionConnection`), so
 * they keep their spans and the client's row transforms.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as RcRef from "effect/RcRef"
import type * as Scope from "effect/Scope"

export interface PinnedSession {
  /** Runs `statement` on the pinned session; through the pool while that session is busy, or when it failed there. */
  readonly run: <A, E, R>(statement: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
}

export const make = (
  sql: SqlClient.SqlClient,
  options: { readonly idleTimeToLive: Duration.DurationInput }
): Effect.Effect<PinnedSession, never, Scope.Scope> =>
  Effect.gen(function*() {
    const session = yield* RcRef.make({ acquire: sql.reserve, idleTimeToLive: options.idleTimeToLive })
    const permit = yield* Effect.makeSemaphore(1)
    const onSession = <A, E, R>(statement: Effect.Effect<A, E, R>) =>
      Effect.scoped(
        Effect.flatMap(RcRef.get(session), (connection) =>
          Effect.provideService(statement, SqlClient.TransactionConnection, [connection, 0]))
      ).pipe(
        Effect.onInterrupt(() => RcRef.invalidate(session)),
        Effect.catchAll(() => Effect.zipRight(RcRef.invalidate(session), statement))
      )
    return {
      run: (statement) =>
        permit.withPermitsIfAvailable(1)(onSession(statement)).pipe(
          Effect.flatMap(Option.match({ onNone: () => statement, onSome: Effect.succeed }))
        )
    }
  })

/** What `run` is when a pool is too small to keep a session out of it: the statement itself. */
export const unpinned: PinnedSession = { run: (statement) => statement }
