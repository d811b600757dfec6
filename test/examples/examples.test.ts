/**
 * The examples, run as written, as a user would run them:
 *
 * - `examples/quickstart.ts` with `tsx` (what `npm run example` runs), on the
 *   in-memory store and on Postgres (`DATABASE_URL` set);
 * - `examples/invoice.ts` and `examples/documents.ts` as the worker modules
 *   of `hyrex worker` (bin/hyrex.mjs) on a fresh test database, fed by the
 *   library's `sendBatch`;
 * - `examples/opentelemetry.ts` with `tsx`;
 * - the programs of docs/getting-started.md (`examples/getting-started/`) and
 *   the Kubernetes entrypoint of docs/deploying.md (`examples/kubernetes-worker.ts`).
 *
 * Each one must finish and produce what its header says; timings are never
 * asserted.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { parseDocument } from "../../examples/documents.js"
import { processInvoice } from "../../examples/invoice.js"
import { TaskStore } from "../../src/TaskStore.js"
import { eventually, start, store } from "../cli/utils.js"
import * as TestDatabase from "../utils/TestDatabase.js"

// The examples on Postgres run worker processes with connection pools: they
// need a real server (on the embedded PGlite every connection shares one
// session, and its socket multiplexer mixes up concurrent answers).
const kind = await Effect.runPromise(TestDatabase.kind)
const realServer = TestDatabase.capabilitiesOf(kind).concurrentSessions
if (!realServer) console.log(`[examples] Postgres examples skipped: the test database is ${kind}, they need a real server`)

const root = fileURLToPath(new URL("../..", import.meta.url))
const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url))

interface Output {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The environment of an example: no DATABASE_URL or HYREX_* inherited. */
const exampleEnv = (env: Record<string, string>): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== "DATABASE_URL" && !key.startsWith("HYREX_"))),
  NO_COLOR: "1",
  ...env
})

/** A running `tsx <file>`, killed (SIGKILL) when the scope closes if it still runs. */
const startExample = (file: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const exited = yield* Deferred.make<Output>()
    let stdout = ""
    let stderr = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(tsx, [file], { cwd: root, env: exampleEnv(env) })),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
    child.on("close", (code) => Deferred.unsafeDone(exited, Effect.succeed({ code, stdout, stderr })))
    return {
      output: () => stdout + stderr,
      signal: (signal: NodeJS.Signals) => Effect.sync(() => void child.kill(signal)),
      exit: (timeout: Duration.DurationInput) =>
        Deferred.await(exited).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new Error(`${file} did not finish within ${Duration.format(Duration.decode(timeout))}: ${stdout}${stderr}`)
          })
        )
    }
  })

/** Runs `tsx <file>` from the repository root to its end. */
const runExample = (file: string, env: Record<string, string> = {}, timeout: Duration.DurationInput = "60 seconds") =>
  Effect.scoped(Effect.flatMap(startExample(file, env), (example) => example.exit(timeout)))

/** What examples/quickstart.ts promises: five tasks succeed, inv_2 on its second attempt, every invoice charged once. */
const checkQuickstart = (output: Output) => {
  expect(output.code, output.stderr + output.stdout).toBe(0)
  const results = output.stdout.split("\n").filter((line) => / succeeded after | failed after /.test(line))
  expect(results.map((line) => line.replace(/ \d+:/, ":"))).toEqual([
    "process_invoice: succeeded after 1 attempt(s)",
    "process_invoice: succeeded after 2 attempt(s)",
    "process_invoice: succeeded after 1 attempt(s)",
    "parse_document: succeeded after 1 attempt(s)",
    "parse_document: succeeded after 1 attempt(s)"
  ])
  const charges = /^charges: (.*)$/m.exec(output.stdout)
  expect(charges, output.stdout).not.toBeNull()
  const counts: Record<string, number> = JSON.parse(charges![1]!)
  expect(Object.keys(counts).map((id) => id.replace(/-.*$/, "")).sort()).toEqual(["inv_1", "inv_2", "inv_3"])
  expect(Object.values(counts)).toEqual([1, 1, 1])
}

const getTask = (id: string) =>
  Effect.flatMap(TaskStore, (store) => store.getTask(id)).pipe(Effect.map(Option.getOrThrow))

/** Two `hyrex worker` processes on the example modules run a backlog sent with the library. */
const workersRunTheModules = (url: string) =>
  Effect.gen(function*() {
    const env = { DATABASE_URL: url }
    const invoiceIds = Array.from({ length: 12 }, (_, i) => `inv_${i + 1}`)
    const invoices = yield* processInvoice.sendBatch(invoiceIds.map((invoiceId, i) => ({ invoiceId, amountCents: 100 * (i + 1) })))
    const documents = yield* parseDocument.sendBatch(Array.from({ length: 5 }, (_, i) => ({ uri: `s3://docs/${i}.pdf` })))

    // As the headers say: one worker for the invoices, one serving only the documents queue.
    const invoiceWorker = yield* start(["worker", "examples/invoice.ts", "--poll-interval", "100ms"], env)
    const documentWorker = yield* start(
      ["worker", "examples/documents.ts", "--queues", "documents", "--poll-interval", "100ms"],
      env
    )
    yield* eventually(
      Effect.map(Effect.forEach([...invoices, ...documents], getTask), (all) => all.every((task) => task.status === "succeeded")),
      "60 seconds",
      "every invoice and document to succeed"
    )

    const storeService = yield* TaskStore
    for (const [i, id] of invoices.entries()) {
      const invoiceId = invoiceIds[i]!
      const task = yield* getTask(id)
      const charge = { chargeId: `hyrex:process_invoice:${id}:charge`, amountCents: 100 * (i + 1) }
      expect(task.result).toEqual(charge)
      // The charge is stored once under its idempotency key.
      expect(Option.getOrThrow(yield* storeService.getIdempotent(`charge:${invoiceId}`))).toEqual(charge)
      if (invoiceId.endsWith("0")) {
        // A provider timeout on the first attempt, then success on the retry.
        expect(task.attempt).toBe(2)
        expect(task.errors.map((error) => [error.kind, error.message])).toEqual([
          ["error", `payment provider timed out charging invoice ${invoiceId}`]
        ])
      } else {
        expect({ attempt: task.attempt, errors: task.errors }).toEqual({ attempt: 1, errors: [] })
      }
    }
    for (const id of documents) {
      const task = yield* getTask(id)
      expect(task.attempt).toBe(1)
      const pages = (task.result as { pages: number }).pages
      expect(Number.isInteger(pages) && pages >= 1 && pages <= 40, `pages ${pages}`).toBe(true)
    }

    // Both drain and exit cleanly on SIGTERM.
    yield* invoiceWorker.signal("SIGTERM")
    yield* documentWorker.signal("SIGTERM")
    for (const worker of [invoiceWorker, documentWorker]) {
      const result = yield* worker.exit.pipe(Effect.timeout("20 seconds"))
      expect(result.code, result.stderr).toBe(0)
      expect(result.stderr).toMatch(/worker stopped/)
    }
    expect(documentWorker.stderr()).toMatch(/worker started on documents \(concurrency 10\)/)
    expect(invoiceWorker.stderr()).toMatch(/worker started on invoices \(concurrency 10\)/)
  })

describe("examples", () => {
  it.live("quickstart.ts on the in-memory store", () =>
    Effect.gen(function*() {
      const output = yield* runExample("examples/quickstart.ts")
      expect(output.stdout + output.stderr).toMatch(/using the in-memory store/)
      checkQuickstart(output)
    }), 90_000)

  it.scopedLive.skipIf(!realServer)("quickstart.ts on Postgres (DATABASE_URL)", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const output = yield* runExample("examples/quickstart.ts", { DATABASE_URL: url })
      expect(output.stdout + output.stderr).toMatch(/using Postgres/)
      checkQuickstart(output)
    }), 90_000)

  it.scopedLive.skipIf(!realServer)("invoice.ts and documents.ts as modules of `hyrex worker`", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      yield* Effect.provide(workersRunTheModules(url), store(url))
    }), 120_000)

  it.live("opentelemetry.ts exports the spans and metrics it describes", () =>
    Effect.gen(function*() {
      const output = yield* runExample("examples/opentelemetry.ts")
      expect(output.code, output.stderr + output.stdout).toBe(0)
      const lines = output.stdout.split("\n")
      // The producer's trace: checkout → hyrex.send.
      expect(lines).toContain("  checkout")
      expect(lines).toContain("    hyrex.send  hyrex.task=process_invoice  hyrex.queue=invoices")
      // One root span per attempt, linked to the send, with the handler's span inside.
      const attempts = lines.filter((line) => line.startsWith("  hyrex.attempt"))
      expect(attempts.map((line) => /hyrex\.task_id=(\d+)  hyrex\.attempt=(\d+)/.exec(line)?.slice(1).join("#"))).toEqual([
        "1#1",
        "2#1",
        "2#2"
      ])
      for (const line of attempts) expect(line).toContain("link → hyrex.send (sent_by)")
      expect(attempts[1]).toContain(`error "payment provider timed out`)
      expect(lines.filter((line) => line === "    charge")).toHaveLength(3)
      // The worker's metrics.
      expect(lines).toContain("  hyrex_tasks_claimed 3")
      expect(lines).toContain("  hyrex_tasks_succeeded 2")
      expect(lines).toContain("  hyrex_attempts_failed 1")
      expect(lines).toContain("  hyrex_tasks_retried 1")
      expect(lines).toContain("  hyrex_attempt_duration_ms count=3")
    }), 90_000)

  it.live("getting-started/memory.ts", () =>
    Effect.gen(function*() {
      const output = yield* runExample("examples/getting-started/memory.ts")
      expect(output.code, output.stderr + output.stdout).toBe(0)
      expect(output.stdout).toMatch(/^task 1: succeeded after 1 attempt\(s\)$/m)
      expect(output.stdout + output.stderr).toMatch(/welcome mail to ada@example\.com \(user u_1\)/)
    }), 60_000)

  it.scopedLive.skipIf(!realServer)("getting-started/send.ts and worker.ts on Postgres", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const env = { DATABASE_URL: url }
      // Sent twice with one idempotency key: one task.
      const first = yield* runExample("examples/getting-started/send.ts", env)
      const second = yield* runExample("examples/getting-started/send.ts", env)
      for (const output of [first, second]) expect(output.code, output.stderr + output.stdout).toBe(0)
      const id = /enqueued task (\d+)/.exec(first.stdout + first.stderr)?.[1]
      expect(id).toBeDefined()
      expect(second.stdout + second.stderr).toContain(`enqueued task ${id}`)

      const worker = yield* startExample("examples/getting-started/worker.ts", env)
      yield* eventually(
        Effect.map(getTask(id!), (task) => task.status === "succeeded"),
        "30 seconds",
        "the worker to run the task"
      ).pipe(Effect.provide(store(url)))
      expect(worker.output()).toMatch(/welcome mail to ada@example\.com \(user u_1\)/)
      yield* worker.signal("SIGTERM")
      const exit = yield* worker.exit("20 seconds")
      expect(exit.code, exit.stdout + exit.stderr).toBe(0)
      expect(exit.stdout + exit.stderr).toMatch(/worker stopped/)
    }), 90_000)

  it.scopedLive.skipIf(!realServer)("kubernetes-worker.ts answers its probes and drains on SIGTERM", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const worker = yield* startExample("examples/kubernetes-worker.ts", {
        DATABASE_URL: url,
        PORT: "0",
        HYREX_CONCURRENCY: "4",
        HYREX_LEASE_TTL: "6 seconds"
      })
      yield* eventually(Effect.sync(() => /probes on port \d+/.test(worker.output())), "30 seconds", "the probes to listen")
      const port = /probes on port (\d+)/.exec(worker.output())![1]
      expect(worker.output()).toMatch(/worker started on documents, invoices \(concurrency 4\)/)
      const probe = (path: string) =>
        Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`).then((response) => response.status))
      expect(yield* probe("/livez")).toBe(200)
      expect(yield* probe("/readyz")).toBe(200)

      const sent = yield* parseDocument.send({ uri: "s3://docs/k8s.pdf" }).pipe(Effect.provide(store(url)))
      yield* eventually(Effect.map(getTask(sent), (task) => task.status === "succeeded"), "30 seconds", "the document")
        .pipe(Effect.provide(store(url)))
      yield* worker.signal("SIGTERM")
      const exit = yield* worker.exit("20 seconds")
      expect(exit.code, exit.stdout + exit.stderr).toBe(0)
      expect(exit.stdout + exit.stderr).toMatch(/worker stopped/)
    }), 90_000)
})
