/**
 * Fail-over under real faults: real `node` worker processes
 * (`workerProcess.ts`) on `PgTaskStore`, a fresh database per scenario, and
 * faults done to them for real — SIGKILL, SIGTERM, process.exit / OOM,
 * SIGSTOP, a cut network link, a Postgres restart.
 *
 * Every scenario ends with the invariants of `harness.ts` and logs its
 * fault-to-takeover times (`[failover] …`). Times are only loosely bounded:
 * the machine is shared and noisy.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npx vitest run --project failover
 *
 * `npm test` runs them too, in the `failover` project of vitest.config.ts,
 * after every other test file (the Postgres restart would break them).
 * The restart scenario needs a local cluster that `pg_ctlcluster` controls;
 * elsewhere it is skipped, except under `CI`, where it fails instead.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { execFile } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import * as TestDatabase from "../utils/TestDatabase.js"
import {
  assertInvariants,
  defaultSpec,
  describeDelays,
  type Fleet,
  logsOf,
  releases,
  reportTakeovers,
  type Snapshot,
  takeoverBound,
  takeovers,
  withFleet,
  type WorkerProcess
} from "./harness.js"
import * as Proxy from "./proxy.js"
import * as Tasks from "./tasks.js"

const backoffMs = Duration.toMillis(Tasks.BACKOFF)

// The scenarios need a real server with concurrent sessions: on the embedded
// PGlite every connection shares one session, which is not a fleet.
const kind = await Effect.runPromise(TestDatabase.kind)
const realServer = TestDatabase.capabilitiesOf(kind).concurrentSessions
if (!realServer) console.log(`[failover] skipped: the test database is ${kind}, the fail-over scenarios need a real Postgres server`)

/** Executions of `worker` that started and have not finished. */
const inFlight = (fleet: Fleet, worker: WorkerProcess) =>
  Effect.map(fleet.snapshot, (state) => state.executions.filter((e) => e.worker_id === worker.workerId() && e.finished_at === null))

/** Waits until `worker` has at least `n` executions in flight. */
const waitInFlight = (fleet: Fleet, worker: WorkerProcess, n: number) =>
  fleet.waitFor(
    `${worker.name} to have ${n} task(s) in flight`,
    Effect.map(inFlight(fleet, worker), (running) => running.length >= n ? Option.some(running) : Option.none())
  )

/** Waits until every execution `worker` had in flight at `faultAt` was started again by another worker. */
const waitTakenOver = (fleet: Fleet, worker: WorkerProcess, faultAt: number) =>
  fleet.waitFor(
    `the tasks of ${worker.name} to be taken over`,
    Effect.map(fleet.snapshot, (state) => {
      const found = takeovers(state, [worker.workerId()!], faultAt)
      return found.length > 0 && found.every((t) => t.next !== undefined)
    })
  )

/**
 * A victim alone takes a full load of long tasks (after the `lead` tasks, if
 * given); the survivors start after it, idle, so takeovers measure leases,
 * not free capacity.
 */
const loadVictim = (
  fleet: Fleet,
  spec: Partial<typeof defaultSpec> = {},
  lead: Effect.Effect<ReadonlyArray<string>, Error> = Effect.succeed([])
) =>
  Effect.gen(function*() {
    const victim = yield* fleet.spawn(spec)
    const leadIds = yield* lead
    const slots = spec.concurrency ?? defaultSpec.concurrency
    yield* fleet.send(Tasks.sleep, Array.from({ length: slots - leadIds.length }, () => ({ ms: 60_000, retryMs: 500 })))
    yield* waitInFlight(fleet, victim, slots)
    return { victim, leadIds }
  })

const annotation = (value: unknown) => value === undefined ? undefined : String(value)

/** Log lines of `worker` about one attempt. */
const attemptLogs = (worker: WorkerProcess, taskId: string, attempt: number) =>
  worker.logs().filter((line) => annotation(line.annotations["taskId"]) === taskId && Number(line.annotations["attempt"]) === attempt)

/** The expiry recorded for `worker`'s lease on `attempt` when it was taken over. */
const expiryOf = (snapshot: Snapshot, taskId: string, attempt: number, workerId: string) =>
  snapshot.tasks.find((task) => task.id === taskId)?.errors.find((error) =>
    error.kind === "lease_expired" && error.attempt === attempt && error.worker === workerId
  )?.at

describe.skipIf(!realServer).sequential("fail-over with real worker processes", () => {
  it.live("crash: SIGKILL with tasks in flight; the others re-run them after the lease expires", () =>
    withFleet((fleet) =>
      Effect.gen(function*() {
        const { victim } = yield* loadVictim(fleet)
        yield* fleet.spawnMany(2)
        yield* fleet.send(Tasks.sleep, Array.from({ length: 8 }, () => ({ ms: 300 })))
        const faultAt = yield* Clock.currentTimeMillis
        yield* fleet.kill(victim)
        const snapshot = yield* fleet.settled()
        yield* assertInvariants(fleet)
        const found = takeovers(snapshot, [victim.workerId()!], faultAt)
        expect(found.length).toBe(defaultSpec.concurrency)
        for (const takeover of found) {
          expect(takeover.next, `task ${takeover.taskId} was not taken over`).toBeDefined()
          expect(takeover.next!.attempt).toBe(takeover.lost.attempt + 1)
        }
        expect(reportTakeovers("crash (SIGKILL)", found, defaultSpec, backoffMs)).toBeLessThan(takeoverBound(defaultSpec))
      })
    ), 120_000)

  it.live("rolling deploy: SIGTERM one worker after another while tasks flow; nothing charged, nothing lost", () =>
    withFleet((fleet) =>
      Effect.gen(function*() {
        const spec = { concurrency: 3, drainTimeout: 1_500 }
        const straggler = 5_000
        const initial = yield* fleet.spawnMany(3, spec)
        const stragglers = new Set<string>()
        const producer = yield* Effect.gen(function*() {
          for (let i = 0;; i++) {
            yield* fleet.send(Tasks.sleep, [{ ms: 100 + (i * 137) % 400 }, { ms: 100 + (i * 251) % 400 }])
            if (i % 4 === 0) for (const id of yield* fleet.send(Tasks.sleep, [{ ms: straggler }])) stragglers.add(id)
            yield* Effect.sleep("300 millis")
          }
        }).pipe(Effect.fork)

        const deployStart = yield* Clock.currentTimeMillis
        for (const old of initial) {
          // Each stopping worker should hold a straggler that cannot finish within drainTimeout.
          yield* fleet.waitFor(
            `${old.name} to hold a fresh straggler`,
            Effect.gen(function*() {
              const now = yield* Clock.currentTimeMillis
              const running = yield* inFlight(fleet, old)
              return running.some((e) =>
                stragglers.has(e.task_id) && e.started_at.getTime() > now - (straggler - spec.drainTimeout - 1_000)
              )
            }),
            "30 seconds"
          )
          // The replacement starts while the old one drains, as in a deploy with surge.
          const stopAt = yield* Clock.currentTimeMillis
          const [exit] = yield* Effect.all([fleet.stop(old), fleet.spawn(spec)], { concurrency: 2 })
          console.log(`[failover] rolling deploy: ${old.name} drained and exited (code ${exit.code}) in ${exit.at - stopAt} ms`)
          expect(exit.code).toBe(0)
          expect(logsOf(old, "worker stopped").length).toBe(1)
        }
        const deployEnd = yield* Clock.currentTimeMillis
        yield* Effect.sleep("1 second")
        yield* Fiber.interrupt(producer)

        const snapshot = yield* fleet.settled()
        yield* assertInvariants(fleet)

        // A drain charges nothing: every task ran on attempt 1 with no lease lost.
        for (const task of snapshot.tasks) {
          expect({ id: task.id, attempt: task.attempt, losses: task.lease_losses, errors: task.errors.length })
            .toEqual({ id: task.id, attempt: 1, losses: 0, errors: 0 })
        }
        // Tasks shorter than drainTimeout ran exactly once.
        for (const task of snapshot.tasks.filter((task) => !stragglers.has(task.id))) {
          expect(snapshot.executions.filter((e) => e.task_id === task.id).length, `executions of task ${task.id}`).toBe(1)
        }
        // Stragglers were released (attempt not charged) and re-run at once by another worker.
        const released = releases(fleet)
        expect(released.length).toBeGreaterThanOrEqual(initial.length)
        const rerunDelays: Array<number> = []
        for (const release of released) {
          expect(stragglers.has(release.taskId), `released task ${release.taskId} is a straggler`).toBe(true)
          expect(release.attempt).toBe(1)
          const next = snapshot.executions.find((e) =>
            e.task_id === release.taskId && e.worker_id !== release.worker && e.started_at.getTime() >= release.at - 50
          )
          expect(next, `released task ${release.taskId} ran again elsewhere`).toBeDefined()
          expect(next!.attempt).toBe(1)
          rerunDelays.push(next!.started_at.getTime() - release.at)
        }
        console.log(`[failover] rolling deploy: ${released.length} straggler(s) released; release-to-rerun: ${describeDelays(rerunDelays)}`)
        // The queue never stalls: completions keep coming during the deploy.
        const completions = snapshot.executions
          .flatMap((e) => e.finished_at === null ? [] : [e.finished_at.getTime()])
          .filter((at) => at >= deployStart && at <= deployEnd)
          .sort((a, b) => a - b)
        const gaps = completions.slice(1).map((at, i) => at - completions[i]!)
        const worstGap = Math.max(0, ...gaps)
        console.log(
          `[failover] rolling deploy: ${completions.length} completions in ${deployEnd - deployStart} ms of deploy; longest gap ${worstGap} ms`
        )
        expect(completions.length).toBeGreaterThan(10)
        expect(worstGap).toBeLessThan(10_000)
      })
    ), 180_000)

  it.live("drain over a slow link: SIGTERM while claims are on the wire charges nothing", () =>
    withFleet((fleet) =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* Proxy.make(fleet.databaseUrl)
        // 100 ms each way: every query of a worker behind it takes 200 ms or more.
        yield* proxy.latency(100)
        // Alone with a backlog and many slots: tasks end all the time, each end wakes the
        // claim loop, so at any moment a claim is likely on the wire.
        const slow = { databaseUrl: proxy.via(fleet.databaseUrl), heartbeatInterval: 800, concurrency: 20 }
        for (let round = 0; round < 2; round++) {
          const victim = yield* fleet.spawn(slow)
          yield* fleet.send(Tasks.sleep, Array.from({ length: 120 }, () => ({ ms: 100 })))
          yield* fleet.waitFor(
            `${victim.name} to finish tasks`,
            Effect.map(fleet.snapshot, (state) =>
              state.executions.filter((e) => e.worker_id === victim.workerId() && e.finished_at !== null).length >= 20)
          )
          const exit = yield* fleet.stop(victim)
          expect(exit.code).toBe(0)
        }
        // A fast worker finishes the rest.
        yield* fleet.spawn({ concurrency: 8 })
        const snapshot = yield* fleet.settled()
        yield* assertInvariants(fleet)
        // A task leased by a claim that was still on the wire at SIGTERM must be
        // started or given back, never left to expire (which would charge an attempt).
        const charged = snapshot.tasks.filter((task) => task.attempt !== 1 || task.lease_losses !== 0)
        console.log(`[failover] drain over a slow link: ${snapshot.tasks.length} tasks, ${charged.length} charged an attempt`)
        expect(charged.map((task) => ({ id: task.id, attempt: task.attempt, errors: task.errors }))).toEqual([])
      }))
    ), 120_000)

  it.live("eviction / OOM: a worker dies hard mid-task (process.exit(137), heap exhausted); same guarantees as a crash", () =>
    withFleet((fleet) =>
      Effect.gen(function*() {
        // A small heap, so that running out of it takes a moment, not minutes.
        const spec = { nodeArgs: ["--max-old-space-size=192"] }
        for (const mode of ["exit", "alloc"] as const) {
          // Each mode gets a fresh victim, loaded alone, and fresh idle survivors.
          for (const idle of fleet.alive()) yield* fleet.stop(idle)
          const { leadIds: [fatalId], victim } = yield* loadVictim(fleet, spec, fleet.send(Tasks.fatal, [{ mode, ms: 300 }]))
          yield* fleet.spawnMany(2, spec)
          const faultAt = yield* Clock.currentTimeMillis
          yield* fleet.signal(victim, Tasks.FATAL_TRIGGER)
          const exit = yield* fleet.awaitExit(victim, "30 seconds")
          console.log(`[failover] eviction (${mode}): ${victim.name} died ${exit.at - faultAt} ms after the trigger (${exit.signal ?? `code ${exit.code}`})`)
          if (mode === "exit") {
            expect(exit.code).toBe(137)
          } else {
            expect(exit.signal ?? exit.code).toSatisfy((how) => how === "SIGABRT" || how === 134)
            expect(victim.stderr()).toContain("heap out of memory")
          }
          yield* waitTakenOver(fleet, victim, faultAt)
          const found = takeovers(yield* fleet.snapshot, [victim.workerId()!], faultAt)
          expect(found.map((t) => t.taskId).sort()).toEqual(
            (yield* fleet.snapshot).executions.filter((e) => e.worker_id === victim.workerId()).map((e) => e.task_id).sort()
          )
          expect(found.map((t) => t.taskId)).toContain(fatalId)
          expect(reportTakeovers(`eviction (${mode})`, found, defaultSpec, backoffMs)).toBeLessThan(takeoverBound(defaultSpec))
          yield* fleet.settled()
        }
        const snapshot = yield* fleet.settled()
        yield* assertInvariants(fleet)
        for (const task of snapshot.tasks.filter((task) => task.name === "fatal")) {
          expect(task.attempt).toBe(2)
          expect(task.errors.map((error) => error.kind)).toEqual(["lease_expired"])
        }
      })
    ), 180_000)

  it.live("pause: SIGSTOP past the lease, SIGCONT; the paused worker's attempts are void, the new owner's result stands", () =>
    withFleet((fleet) =>
      Effect.gen(function*() {
        const { victim } = yield* loadVictim(fleet)
        yield* fleet.spawnMany(2)
        const faultAt = yield* Clock.currentTimeMillis
        yield* fleet.signal(victim, "SIGSTOP")
        yield* waitTakenOver(fleet, victim, faultAt)
        // Stay paused a little longer, so the new owners have committed.
        yield* fleet.waitFor(
          "the taken-over tasks to succeed",
          Effect.map(fleet.snapshot, (state) => state.tasks.every((task) => task.status === "succeeded"))
        )
        const resumeAt = yield* Clock.currentTimeMillis
        yield* fleet.signal(victim, "SIGCONT")
        const lost = takeovers(yield* fleet.snapshot, [victim.workerId()!], faultAt)
        console.log(`[failover] pause: resumed ${victim.name} after ${resumeAt - faultAt} ms`)

        // Once resumed, it learns its leases are gone and stops those attempts itself.
        yield* fleet.waitFor(
          `${victim.name} to stop its ${lost.length} stale attempt(s)`,
          Effect.sync(() =>
            lost.every(({ lost: e }) =>
              attemptLogs(victim, e.task_id, e.attempt).some((line) =>
                line.message.startsWith("attempt stopped") || line.message.startsWith("lease lost before the attempt settled")
              )
            )
          ),
          "20 seconds"
        )
        const seen = new Set(victim.logs().filter((line) => line.level !== "INFO").map((line) => line.message.split(":")[0]))
        console.log(`[failover] pause: after SIGCONT ${victim.name} logged: ${Array.from(seen).join(" | ")}`)
        for (const { lost: e } of lost) {
          const messages = attemptLogs(victim, e.task_id, e.attempt).map((line) => line.message)
          expect(messages, `what ${victim.name} logged about task ${e.task_id}`).not.toContain("execution finished")
          expect(messages).toContain("execution interrupted")
        }
        // It is alive, renews again and takes new work.
        expect(victim.isAlive()).toBe(true)
        yield* fleet.send(Tasks.sleep, Array.from({ length: 12 }, () => ({ ms: 1_500 })))
        yield* fleet.waitFor(
          `${victim.name} to run new work`,
          Effect.map(fleet.snapshot, (state) =>
            state.executions.some((e) => e.worker_id === victim.workerId() && e.started_at.getTime() > resumeAt))
        )
        const snapshot = yield* fleet.settled()
        yield* assertInvariants(fleet)
        for (const { lost: e } of lost) {
          const task = snapshot.tasks.find((task) => task.id === e.task_id)!
          expect(task.result?.worker).not.toBe(victim.workerId())
          expect(task.attempt).toBe(e.attempt + 1)
        }
        expect(reportTakeovers("pause (SIGSTOP)", lost, defaultSpec, backoffMs)).toBeLessThan(takeoverBound(defaultSpec))
      })
    ), 120_000)

  it.live("partition: a black-holed worker fences itself before its leases expire, the others take over, it rejoins after the heal", () =>
    withFleet((fleet) =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* Proxy.make(fleet.databaseUrl)
        const { victim } = yield* loadVictim(fleet, { databaseUrl: proxy.via(fleet.databaseUrl) })
        yield* fleet.spawnMany(2)
        const cutAt = yield* Clock.currentTimeMillis
        yield* proxy.cut("blackhole")
        yield* waitTakenOver(fleet, victim, cutAt)
        const snapshot = yield* fleet.snapshot
        const lost = takeovers(snapshot, [victim.workerId()!], cutAt)
        expect(lost.length).toBe(defaultSpec.concurrency)

        // It interrupted every task itself, before its lease expired (the fence also stops claims).
        expect(logsOf(victim, "could not renew leases in time").length).toBeGreaterThanOrEqual(1)
        const margins: Array<number> = []
        for (const { lost: e } of lost) {
          const messages = attemptLogs(victim, e.task_id, e.attempt)
          const interrupted = messages.find((line) => line.message === "execution interrupted")
          expect(interrupted, `${victim.name} interrupted task ${e.task_id}`).toBeDefined()
          expect(messages.filter((line) => line.message === "execution finished" && line.at >= cutAt)).toEqual([])
          const expiry = expiryOf(snapshot, e.task_id, e.attempt, victim.workerId()!)
          expect(expiry, `lease expiry of task ${e.task_id}`).toBeDefined()
          margins.push(expiry!.getTime() - interrupted!.at)
        }
        console.log(`[failover] partition: the cut-off worker stopped its tasks ahead of their lease expiry by ${describeDelays(margins)}`)
        for (const margin of margins) expect(margin).toBeGreaterThan(0)
        expect(reportTakeovers("partition (black hole)", lost, defaultSpec, backoffMs)).toBeLessThan(takeoverBound(defaultSpec))

        // Heal: the held bytes are delivered late; none of them may commit.
        const healAt = yield* Clock.currentTimeMillis
        yield* proxy.heal()
        yield* fleet.waitFor(
          `${victim.name} to renew again`,
          Effect.map(fleet.snapshot, (state) =>
            state.workers.some((w) => w.id === victim.workerId() && w.last_heartbeat_at.getTime() > healAt))
        )
        // The others have 8 slots: 12 tasks of 1.5 s leave work for it too.
        yield* fleet.send(Tasks.sleep, Array.from({ length: 12 }, () => ({ ms: 1_500 })))
        yield* fleet.waitFor(
          `${victim.name} to claim new work`,
          Effect.map(fleet.snapshot, (state) =>
            state.executions.some((e) => e.worker_id === victim.workerId() && e.started_at.getTime() > healAt))
        )
        const final = yield* fleet.settled()
        yield* assertInvariants(fleet)
        for (const { lost: e } of lost) {
          const execution = final.executions.find((x) => x.task_id === e.task_id && x.worker_id === e.worker_id)
          expect(execution?.finished_at ?? null, `the cut-off execution of task ${e.task_id} never completed`).toBeNull()
        }
      }))
    ), 120_000)

  it.live("partition + SIGTERM: a cut-off worker told to stop still exits, and its tasks are taken over", () =>
    withFleet((fleet) =>
      Effect.scoped(Effect.gen(function*() {
        const proxy = yield* Proxy.make(fleet.databaseUrl)
        // drainTimeout shorter than the fence deadline: the stragglers' releases are on the dead link.
        const { victim } = yield* loadVictim(fleet, { databaseUrl: proxy.via(fleet.databaseUrl), drainTimeout: 500 })
        yield* fleet.spawnMany(2)
        const cutAt = yield* Clock.currentTimeMillis
        yield* proxy.cut("blackhole")
        yield* fleet.signal(victim, "SIGTERM")
        // Draining cannot release anything over a dead link; the attempts' writes give up
        // after a lease's worth of retries (execution model, "Settling an attempt"), and
        // closing the clients must not wait for a server that cannot answer.
        const bound = victim.spec.drainTimeout + 2 * victim.spec.leaseTtl + 15_000
        const exit = yield* fleet.awaitExit(victim, Duration.millis(bound)).pipe(
          Effect.mapError((error) =>
            new Error(
              `${error.message}: a worker cut off from Postgres never finishes shutting down after SIGTERM ` +
                `(its last log lines: ${victim.logs().slice(-3).map((line) => line.message).join(" | ")})`
            )
          )
        )
        console.log(`[failover] partition + SIGTERM: ${victim.name} exited ${exit.at - cutAt} ms after the cut (${exit.signal ?? `code ${exit.code}`})`)
        yield* waitTakenOver(fleet, victim, cutAt)
        const lost = takeovers(yield* fleet.snapshot, [victim.workerId()!], cutAt)
        expect(lost.length).toBe(defaultSpec.concurrency)
        expect(reportTakeovers("partition + SIGTERM", lost, defaultSpec, backoffMs)).toBeLessThan(takeoverBound(defaultSpec))
        yield* proxy.heal()
        yield* fleet.settled()
        yield* assertInvariants(fleet)
      }))
    ), 120_000)

  it.live("poison task: kills every worker that runs it, ends failed after maxRetries, the fleet keeps working", () =>
    withFleet((fleet) =>
      Effect.gen(function*() {
        yield* fleet.spawnMany(3, { concurrency: 2 })
        yield* fleet.supervise(true)
        const [poisonId] = yield* fleet.send(Tasks.poison, [{}])
        // Work keeps arriving while the poison task goes round.
        const producer = yield* Effect.gen(function*() {
          for (;;) {
            yield* fleet.send(Tasks.sleep, Array.from({ length: 4 }, () => ({ ms: 300 })))
            yield* Effect.sleep("1 second")
          }
        }).pipe(Effect.fork)
        yield* fleet.waitFor(
          "the poison task to end",
          Effect.map(fleet.snapshot, (state) => state.tasks.some((task) => task.id === poisonId && task.status === "failed")),
          "90 seconds"
        )
        yield* Effect.sleep("1 second")
        yield* Fiber.interrupt(producer)
        const snapshot = yield* fleet.settled("90 seconds")
        yield* assertInvariants(fleet, { failing: ["poison"] })

        const poison = snapshot.tasks.find((task) => task.id === poisonId)!
        expect(poison.attempt).toBe(Tasks.POISON_MAX_RETRIES + 1)
        expect(poison.errors.map((error) => error.kind)).toEqual(Array(Tasks.POISON_MAX_RETRIES + 1).fill("lease_expired"))
        const runs = snapshot.executions.filter((e) => e.task_id === poisonId)
        expect(runs.map((e) => e.attempt)).toEqual([1, 2, 3])
        const killed = fleet.workers().filter((w) => !w.isAlive() && !w.intended)
        expect(killed.length).toBe(Tasks.POISON_MAX_RETRIES + 1)
        expect(new Set(runs.map((e) => e.pid))).toEqual(new Set(killed.map((w) => w.pid)))
        const others = snapshot.tasks.filter((task) => task.name === "sleep")
        console.log(
          `[failover] poison: ${killed.length} workers killed and replaced; ${others.length} other tasks all succeeded`
        )
        expect(others.length).toBeGreaterThan(8)
      })
    ), 180_000)
})

// --- Postgres restart ---------------------------------------------------------

const clusterVersion = existsSync("/etc/postgresql") ? readdirSync("/etc/postgresql")[0] : undefined
const pgCtlcluster = ["/usr/bin/pg_ctlcluster", "/usr/sbin/pg_ctlcluster"].find(existsSync)
const localServer = (() => {
  try {
    const host = new URL(process.env["DATABASE_URL"] ?? "").hostname
    return host === "127.0.0.1" || host === "localhost"
  } catch {
    return false
  }
})()
const canRestart = kind === "env" && localServer && pgCtlcluster !== undefined && clusterVersion !== undefined
// In CI the machine's own cluster is the test database: not being able to
// restart it there is a broken setup, not a reason to skip.
const mustRestart = process.env["CI"] !== undefined && process.env["CI"] !== "" && process.env["CI"] !== "false"
if (!canRestart && !mustRestart) {
  console.log("[failover] Postgres restart skipped: DATABASE_URL is not a local cluster that pg_ctlcluster controls")
}

const cluster = (action: "stop" | "start") =>
  Effect.async<string, Error>((resume) => {
    execFile(
      pgCtlcluster!,
      ["--skip-systemctl-redirect", clusterVersion!, "main", action],
      { encoding: "utf8", timeout: 60_000 },
      (error, stdout, stderr) =>
        resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`pg_ctlcluster ${action} failed: ${error.message} ${stderr}`)))
    )
  })

describe.runIf(realServer && (canRestart || mustRestart)).sequential("fail-over across a Postgres restart", () => {
  it.live("Postgres restarts under load: workers survive, reconnect and lose nothing", () =>
    Effect.gen(function*() {
      if (!canRestart) {
        return yield* Effect.fail(
          new Error(
            `CI is set but this process cannot restart the test cluster (DATABASE_URL=${process.env["DATABASE_URL"]}, ` +
              `pg_ctlcluster=${pgCtlcluster}, cluster=${clusterVersion}, kind=${kind})`
          )
        )
      }
      yield* withFleet((fleet) =>
        Effect.gen(function*() {
          const workers = yield* fleet.spawnMany(3)
          yield* fleet.send(Tasks.sleep, Array.from({ length: 24 }, (_, i) => ({ ms: 500 + (i % 4) * 500 })))
          yield* Effect.sleep("1500 millis")
          const faultAt = yield* Clock.currentTimeMillis
          // Down for longer than a lease, so every worker fences itself;
          // whatever happens, the cluster is left running.
          yield* cluster("stop").pipe(
            Effect.zipRight(Effect.sleep(Duration.millis(defaultSpec.leaseTtl + 1_000))),
            Effect.ensuring(Effect.ignore(cluster("start")))
          )
          const upAt = yield* Clock.currentTimeMillis
          console.log(`[failover] postgres restart: down for ${upAt - faultAt} ms`)
          yield* fleet.waitFor("the database to answer", Effect.as(fleet.sql`SELECT 1`, true))
          yield* fleet.send(Tasks.sleep, Array.from({ length: 12 }, () => ({ ms: 300 })))
          const snapshot = yield* fleet.settled("90 seconds")
          yield* assertInvariants(fleet)

          for (const worker of workers) expect(worker.isAlive(), `${worker.name} survived`).toBe(true)
          yield* fleet.waitFor(
            "every worker to renew again",
            Effect.map(fleet.snapshot, (state) =>
              workers.every((worker) =>
                state.workers.some((row) => row.id === worker.workerId() && row.last_heartbeat_at.getTime() > upAt)
              ))
          )
          const resumed = snapshot.executions.filter((e) => e.started_at.getTime() > upAt)
          expect(resumed.length).toBeGreaterThan(0)
          const firstAfter = Math.min(...resumed.map((e) => e.started_at.getTime()))
          const lostLeases = snapshot.tasks.reduce((sum, task) => sum + task.lease_losses, 0)
          console.log(
            `[failover] postgres restart: first execution ${firstAfter - upAt} ms after the server was back; ` +
              `${lostLeases} lease(s) lost in the outage; ${snapshot.tasks.length} tasks all succeeded`
          )
        })
      )
    }), 180_000)
})
