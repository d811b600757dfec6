/**
 * The live screens in a real terminal (tmux, 120×40): `status --watch`
 * redraws in place and exits cleanly on Ctrl-C; `demo` on its embedded
 * Postgres shows the fail-over live and ends with the summary (lost 0).
 *
 * Needs tmux; skipped (with a warning) where it is not installed.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { TaskStore } from "../../src/TaskStore.js"
import * as TestDatabase from "../utils/TestDatabase.js"
import { nap } from "./fixtures/sleepy.js"
import { demoSummary, hasTmux, store, terminal } from "./utils.js"

if (!hasTmux) console.warn("[test/cli/terminal] tmux is not installed: the terminal tests are skipped")

const occurrences = (text: string, pattern: RegExp) => text.match(new RegExp(pattern.source, `${pattern.flags}g`))?.length ?? 0

describe.runIf(hasTmux)("hyrex in a terminal", () => {
  it.scopedLive("status --watch redraws in place and exits on Ctrl-C", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      yield* Effect.provide(
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* nap.sendBatch([{ millis: 1 }, { millis: 2 }])
          yield* store.registerWorker({
            id: "tty-worker/0001",
            name: "tty-worker",
            host: "testhost",
            pid: 777,
            queues: ["naps"],
            concurrency: 8
          })
        }),
        store(url)
      )
      const tty = yield* terminal(["status", "--watch", "--interval", "300ms"], { DATABASE_URL: url })
      const first = yield* tty.waitFor(/^naps\s+2\s+0\s+0\s+0\s+0\s+0\s+[\d.]+\/s$/m)
      expect(first).toMatch(/^hyrex status\s+postgres/m)
      expect(first).toMatch(/QUEUE\s+QUEUED\s+SCHEDULED\s+RUNNING\s+FAILED\s+SUCCEEDED 1H\s+SUCCEEDED 1MIN\s+THROUGHPUT/)
      expect(first).toMatch(/WORKERS: 1 live/)
      expect(first).toMatch(/tty-worker\s+tty-worker\/0001\s+777\s+testhost\s+naps\s+0\/8/)
      expect(first).toMatch(/Ctrl-C to exit/)

      // New tasks show up on the same screen: redrawn in place, not printed below.
      yield* Effect.provide(nap.sendBatch([{ millis: 3 }, { millis: 4 }, { millis: 5 }]), store(url))
      const second = yield* tty.waitFor(/^naps\s+5\s/m)
      expect(occurrences(second, /^hyrex status/m)).toBe(1)
      expect(occurrences(second, /^QUEUE\s/m)).toBe(1)

      yield* tty.keys("C-c")
      const end = yield* tty.waitFor(/EXIT=\d+/, "10 seconds")
      expect(end).toMatch(/EXIT=0/)
      expect(end).not.toMatch(/hyrex: /)
    }), 60_000)

  it.scopedLive("demo: the takeover live, then a summary with nothing lost", () =>
    Effect.gen(function*() {
      // No DATABASE_URL: the embedded Postgres, the default a fresh clone gets.
      const tty = yield* terminal(["demo", "--documents", "100", "--invoices", "50"])
      const live = yield* tty.waitFor(/KILLED \(SIGKILL at/, "90 seconds")
      expect(live).toMatch(/^hyrex demo\s+embedded Postgres \(PGlite\)/m)
      expect(live).toMatch(/QUEUES\s+draining the backlog/)
      expect(live).toMatch(/documents\s+\[[█░]+\]\s+\d+\/100/)
      expect(live).toMatch(/invoices\s+\[[█░]+\]\s+\d+\/50/)
      expect(live).toMatch(/NAME\s+PID\s+STATUS\s+IN-FLIGHT\s+HEARTBEAT/)
      expect(occurrences(live, /^\s+demo-\d\s+\d+\s+(running|KILLED)/m)).toBe(3)
      expect(live).toMatch(/TAKEOVER\n\s+demo-\d was killed holding \d+ task\(s\)/)
      expect(occurrences(live, /^hyrex demo/m)).toBe(1)

      const end = yield* tty.waitFor(/EXIT=\d+/, "90 seconds")
      expect(end).toMatch(/QUEUES\s+done/)
      expect(end).toMatch(/SUMMARY/)
      expect(end).toMatch(/tasks\s+150 \(100 parse_document, 50 process_invoice\), 150 succeeded/)
      expect(end).toMatch(/takeovers\s+\d+ \(lease losses/)
      // At-least-once: a handler the killed worker finished may run again if its
      // result had not landed; never more than one duplicate per takeover.
      const { duplicates, takeovers } = demoSummary(end)
      expect(duplicates).toBeLessThanOrEqual(takeovers)
      expect(end).toMatch(/lost\s+0 \(tasks that did not succeed\)/)
      expect(end).toMatch(/EXIT=0/)
    }), 120_000)
})
