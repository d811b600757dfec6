/**
 * `hyrex demo` against a server given with --database-url (not a terminal):
 * it works in a fresh schema `hyrex_demo_<random>` and drops it at the end.
 * (The embedded default runs in a real terminal in terminal.test.ts.)
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestDatabase from "../utils/TestDatabase.js"
import { demoSummary, run } from "./utils.js"

// The demo's worker processes need sessions of their own, as in
// worker.test.ts: on the embedded PGlite every connection shares one session
// (seen as a worker failing to register: "unnamed prepared statement does
// not exist"). The demo on its own embedded Postgres runs in terminal.test.ts.
const kind = await Effect.runPromise(TestDatabase.kind)
const realServer = TestDatabase.capabilitiesOf(kind).concurrentSessions
if (!realServer) console.log(`[cli demo] skipped: the test database is ${kind}, the demo's worker processes need a real Postgres server`)

describe.skipIf(!realServer)("hyrex demo", () => {
  it.scopedLive("runs in a fresh schema of the given database and drops it", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const result = yield* run(["demo", "--database-url", url, "--documents", "30", "--invoices", "15"], {}, "90 seconds")
      expect(result.code, result.stderr).toBe(0)
      const schema = /schema (hyrex_demo_[0-9a-f]{8}) ready/.exec(result.stdout)?.[1]
      expect(schema, result.stdout).toBeDefined()
      // Not a terminal: events and progress are printed line by line, then the summary.
      expect(result.stdout).toMatch(/all 3 workers registered/)
      expect(result.stdout).toMatch(/SIGKILL demo-\d \(pid \d+\) while it runs task\(s\) \d+/)
      expect(result.stdout).toMatch(/45\/45 succeeded/)
      expect(result.stdout).toMatch(/tasks\s+45 \(30 parse_document, 15 process_invoice\), 45 succeeded/)
      // At-least-once: a handler the killed worker finished may run again if its
      // result had not landed; never more than one duplicate per takeover.
      const { duplicates, takeovers } = demoSummary(result.stdout)
      expect(duplicates).toBeLessThanOrEqual(takeovers)
      expect(result.stdout).toMatch(/lost\s+0 \(tasks that did not succeed\)/)
      const schemas = yield* Effect.scoped(
        Effect.gen(function*() {
          const sql = yield* TestDatabase.makeClient(url)
          return yield* sql<{ readonly name: string }>`SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'hyrex%'`
        })
      )
      expect(schemas).toEqual([])
    }), 120_000)
})
