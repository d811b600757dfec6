/**
 * The contract of `TaskStore` (see src/TaskStore.ts), run against every store
 * by calling the service directly. Nothing here knows how a store keeps its
 * data: only what the interface documents.
 */
import { describe, expect } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { ClaimedTask, ClaimRequest, EnqueueRequest, Lease, TaskInfo } from "../../src/TaskStore.js"
import { TaskStore } from "../../src/TaskStore.js"
import {
  advance,
  advanceTo,
  durations,
  eventually,
  getTask,
  makeTest,
  millis,
  now,
  type StoreHarness
} from "../utils/StoreHarness.js"

const HOUR = 3_600_000

/** A request for task `t.a` on queue `q1`; `overrides` win. */
const request = (overrides: Partial<EnqueueRequest> = {}): EnqueueRequest => ({
  name: "t.a",
  queue: "q1",
  payload: { n: 1 },
  priority: 0,
  maxRetries: 3,
  backoff: [0, 0, 0],
  delayMillis: 0,
  ...overrides
})

const enqueueOne = (overrides: Partial<EnqueueRequest> = {}) =>
  Effect.flatMap(TaskStore, (store) => store.enqueue([request(overrides)])).pipe(Effect.map((ids) => ids[0]!))

/** The error of an effect that must fail. */
const failure = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.flip(effect)

/** When a claim happened, on the store's clock: its lease expiry minus the TTL it was given. */
const claimedAt = (task: TaskInfo, leaseTtlMillis: number) => task.leaseExpiresAt!.getTime() - leaseTtlMillis

export const taskStoreSuite = (harness: StoreHarness): void => {
  const test = makeTest(harness)
  const d = durations(harness)
  const ttl = millis(d.leaseTtl)
  const unit = millis(d.unit)
  const testClock = harness.clock === "test-clock"

  const claimRequest = (workerId: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest => ({
    workerId,
    queues: ["q1"],
    names: ["t.a", "t.b"],
    limits: {},
    max: 10,
    leaseTtlMillis: ttl,
    ...overrides
  })
  const claim = (workerId: string, overrides: Partial<ClaimRequest> = {}) =>
    Effect.flatMap(TaskStore, (store) => store.claim(claimRequest(workerId, overrides)))
  const claimOne = (workerId: string, overrides: Partial<ClaimRequest> = {}) =>
    Effect.map(claim(workerId, { max: 1, ...overrides }), (claimed) => {
      expect(claimed).toHaveLength(1)
      return claimed[0]!
    })
  /** Waits until `workerId` claims something (live mode: the store decides when it is due). */
  const claimEventually = (workerId: string, overrides: Partial<ClaimRequest> = {}) =>
    eventually(harness, claimOne(workerId, overrides))
  const expectClose = (actual: number, expected: number, tolerance: number = millis(d.precision)) =>
    expect(Math.abs(actual - expected), `${actual} vs ${expected}`).toBeLessThanOrEqual(tolerance)
  /** Runs the claim through every failed attempt until the task has run `attempts` times and lost each lease. */
  const expireEveryAttempt = (taskId: string, attempts: number) =>
    Effect.gen(function*() {
      for (let attempt = 1; attempt <= attempts; attempt++) {
        const claimed = yield* claimEventually(`w${attempt}`)
        expect(claimed.lease).toEqual({ taskId, attempt, owner: `w${attempt}` })
        expect(claimed.takeover).toBe(attempt > 1)
        yield* advance(harness, Duration.millis(ttl + 1))
      }
    })

  describe(`TaskStore contract (${harness.name})`, () => {
    describe("enqueue", () => {
      test("returns one id per request; a new task is queued at attempt 0 and due at once", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const payload = { invoice: "inv_1", lines: [{ sku: "a", qty: 2 }], note: null, paid: false, total: 12.5 }
          const ids = yield* store.enqueue([
            request({ payload, priority: 3, maxRetries: 2, backoff: [10, 20] }),
            request({ name: "t.b", queue: "q2" })
          ])
          expect(ids).toHaveLength(2)
          expect(new Set(ids).size).toBe(2)
          const task = yield* getTask(ids[0]!)
          expect(task).toMatchObject({
            id: ids[0],
            name: "t.a",
            queue: "q1",
            status: "queued",
            payload,
            priority: 3,
            attempt: 0,
            maxRetries: 2,
            leaseLosses: 0,
            leaseOwner: null,
            leaseExpiresAt: null,
            idempotencyKey: null,
            errors: [],
            finishedAt: null
          })
          expectClose(task.runAt.getTime(), task.createdAt.getTime())
          expect(yield* getTask(ids[1]!)).toMatchObject({ name: "t.b", queue: "q2", status: "queued" })
          expect(yield* store.getTask("999999")).toEqual(Option.none())
          expect(yield* store.enqueue([])).toEqual([])
        }))

      test("payloads come back exactly as sent, alone and in a batch", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const payloads: ReadonlyArray<unknown> = [
            { quote: 'say "hi"', backslash: "C:\\temp\\new", braces: "{a,b}", comma: "x,y", unicode: "naïve 日本 🚀" },
            "a plain string, with \"quotes\" and a \\",
            [1, -2.5, 1e21, 0.1, null, true, { nested: [[]] }],
            null,
            12
          ]
          const batch = payloads.map((payload) => request({ payload }))
          const ids = [...yield* store.enqueue(batch), ...yield* store.enqueue([batch[0]!]), ...yield* store.enqueue([batch[2]!])]
          const sent = [...payloads, payloads[0], payloads[2]]
          for (const [index, id] of ids.entries()) {
            expect((yield* getTask(id)).payload).toEqual(sent[index])
          }
        }))

      test("delayMillis schedules the task: it is not claimable until due", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const [later, soon] = yield* store.enqueue([
            request({ delayMillis: HOUR }),
            request({ delayMillis: unit })
          ])
          const laterTask = yield* getTask(later!)
          const soonTask = yield* getTask(soon!)
          expect(laterTask.status).toBe("queued")
          expectClose(laterTask.runAt.getTime() - laterTask.createdAt.getTime(), HOUR)
          expectClose(soonTask.runAt.getTime() - soonTask.createdAt.getTime(), unit)
          if (testClock) {
            expect(yield* claim("w1")).toEqual([])
            yield* advanceTo(harness, soonTask.runAt.getTime() - 1)
            expect(yield* claim("w1")).toEqual([])
            yield* advance(harness, Duration.millis(1))
          }
          const claimed = yield* claimEventually("w1", { max: 10 })
          expect(claimed.lease.taskId).toBe(soon)
          expect(claimedAt(yield* getTask(soon!), ttl)).toBeGreaterThanOrEqual(soonTask.runAt.getTime())
          expect(claimed.dueAt.getTime()).toBe(soonTask.runAt.getTime())
          expect(yield* claim("w2")).toEqual([])
          expect((yield* getTask(later!)).status).toBe("queued")
        }))

      test("an idempotency key returns the existing id per task name and adds nothing", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const first = yield* enqueueOne({ idempotencyKey: "k1", payload: { n: 1 } })
          const again = yield* enqueueOne({ idempotencyKey: "k1", payload: { n: 2 } })
          expect(again).toBe(first)
          const otherName = yield* enqueueOne({ name: "t.b", idempotencyKey: "k1" })
          expect(otherName).not.toBe(first)
          const otherKey = yield* enqueueOne({ idempotencyKey: "k2" })
          expect(otherKey).not.toBe(first)
          const tasks = yield* store.listTasks({ name: "t.a" })
          expect(tasks.map((task) => task.id).sort()).toEqual([first, otherKey].sort())
          const task = yield* getTask(first)
          expect(task.payload).toEqual({ n: 1 })
          expect(task.idempotencyKey).toBe("k1")
          // A key still counts once its task has run.
          const claimed = yield* claimOne("w1", { names: ["t.a"] })
          yield* store.complete(claimed.lease, null)
          expect(yield* enqueueOne({ idempotencyKey: "k1" })).toBe(first)
          expect(yield* store.listTasks({})).toHaveLength(3)
        }))

      test("duplicate idempotency keys within one batch share one task", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids = yield* store.enqueue([
            request({ idempotencyKey: "dup", payload: { n: 1 } }),
            request({ idempotencyKey: "dup", payload: { n: 2 } }),
            request({ idempotencyKey: "other" })
          ])
          expect(ids[0]).toBe(ids[1])
          expect(ids[2]).not.toBe(ids[0])
          expect(yield* store.listTasks({})).toHaveLength(2)
          expect((yield* getTask(ids[0]!)).payload).toEqual({ n: 1 })
        }))
    })

    describe("claim", () => {
      test("claims only tasks of the requested queues and names", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const [aq1, bq1, aq2] = yield* store.enqueue([
            request({ name: "t.a", queue: "q1" }),
            request({ name: "t.b", queue: "q1" }),
            request({ name: "t.a", queue: "q2" })
          ])
          expect(yield* claim("w1", { queues: ["q3"] })).toEqual([])
          expect(yield* claim("w1", { names: ["t.c"] })).toEqual([])
          const a = yield* claim("w1", { queues: ["q1"], names: ["t.a"] })
          expect(a.map((task) => task.lease.taskId)).toEqual([aq1])
          const q2 = yield* claim("w1", { queues: ["q2"], names: ["t.a", "t.b"] })
          expect(q2.map((task) => task.lease.taskId)).toEqual([aq2])
          const b = yield* claim("w1", { queues: ["q1", "q2"], names: ["t.b"] })
          expect(b.map((task) => task.lease.taskId)).toEqual([bq1])
          expect(b[0]).toMatchObject({ name: "t.b", queue: "q1" })
        }))

      test("claims at most max tasks", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* store.enqueue(Array.from({ length: 5 }, (_, n) => request({ payload: { n } })))
          expect(yield* claim("w1", { max: 2 })).toHaveLength(2)
          expect(yield* claim("w2", { max: 10 })).toHaveLength(3)
          expect(yield* claim("w3", { max: 10 })).toEqual([])
        }))

      test("higher priority first, then the earliest due", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          // Created first but due last.
          const [lateDue] = yield* store.enqueue([request({ payload: "late", delayMillis: 2 * unit })])
          yield* advance(harness, d.unit)
          const early = yield* enqueueOne({ payload: "early" })
          yield* advance(harness, d.step)
          const high = yield* enqueueOne({ payload: "high", priority: 10 })
          yield* advance(harness, d.step)
          const middle = yield* enqueueOne({ payload: "middle", priority: 5 })
          const lateTask = yield* getTask(lateDue!)
          yield* advanceTo(harness, lateTask.runAt.getTime())
          const order: Array<string> = []
          for (let n = 0; n < 4; n++) {
            const claimed = yield* claimEventually(`w${n}`)
            order.push(claimed.lease.taskId)
          }
          expect(order).toEqual([high, middle, early, lateDue])
        }))

      test("a claim starts attempt 1 under a lease of the claiming worker", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ payload: { x: [1, 2] }, priority: 2, maxRetries: 4, backoff: [1, 2, 3, 4] })
          const created = yield* getTask(id)
          const claimed = yield* claimOne("w1")
          expect(claimed).toMatchObject({
            lease: { taskId: id, attempt: 1, owner: "w1" },
            name: "t.a",
            queue: "q1",
            payload: { x: [1, 2] },
            priority: 2,
            maxRetries: 4,
            leaseLosses: 0,
            takeover: false
          })
          expect(claimed.dueAt.getTime()).toBe(created.runAt.getTime())
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "running", attempt: 1, leaseOwner: "w1", errors: [] })
          expect(task.leaseExpiresAt).not.toBeNull()
          if (testClock) expect(task.leaseExpiresAt!.getTime()).toBe((yield* now) + ttl)
          const running = yield* store.listTasks({ status: "running" })
          expect(running.map((t) => t.id)).toEqual([id])
        }))

      test("a leased task is not claimable again while its lease is live", () =>
        Effect.gen(function*() {
          const id = yield* enqueueOne()
          const claimed = yield* claimOne("w1")
          expect(yield* claim("w2")).toEqual([])
          expect(yield* claim("w1")).toEqual([])
          yield* advance(harness, Duration.millis(ttl / 2))
          expect(yield* claim("w2")).toEqual([])
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "running", attempt: 1, leaseOwner: "w1" })
          expect(claimed.lease.owner).toBe("w1")
        }))

      test("concurrent claims never hand out one task twice", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids = yield* store.enqueue(Array.from({ length: 24 }, (_, n) => request({ payload: { n } })))
          const claimed: Array<ClaimedTask> = []
          // Several rounds of eight workers claiming at once.
          for (let round = 0; round < 6 && claimed.length < ids.length; round++) {
            const batches = yield* Effect.all(
              Array.from({ length: 8 }, (_, n) => claim(`w${n}`, { max: 2 })),
              { concurrency: "unbounded" }
            )
            claimed.push(...batches.flat())
          }
          const claimedIds = claimed.map((task) => task.lease.taskId)
          expect(new Set(claimedIds).size).toBe(claimedIds.length)
          expect(claimedIds.sort()).toEqual([...ids].sort())
          for (const task of claimed) expect(task.lease.attempt).toBe(1)
        }))
    })

    describe("fencing", () => {
      test("complete, fail and release with a wrong owner or attempt fail with LeaseLost and change nothing", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          const wrong: ReadonlyArray<Lease> = [
            { ...lease, owner: "w2" },
            { ...lease, attempt: 2 },
            { ...lease, attempt: 0 },
            { ...lease, taskId: "999999" }
          ]
          for (const bad of wrong) {
            const errors = [
              yield* failure(store.complete(bad, { stolen: true })),
              yield* failure(store.fail(bad, { kind: "error", message: "x", retryable: true })),
              yield* failure(store.release(bad))
            ]
            for (const error of errors) {
              expect(error._tag).toBe("LeaseLost")
              expect(error).toMatchObject({ taskId: bad.taskId, attempt: bad.attempt, owner: bad.owner })
            }
          }
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "running", attempt: 1, leaseOwner: "w1", errors: [], finishedAt: null })
          expect(task.result ?? null).toBeNull()
          yield* store.complete(lease, { ok: 1 })
          const done = yield* getTask(id)
          expect(done).toMatchObject({ status: "succeeded", attempt: 1, result: { ok: 1 }, leaseOwner: null })
          expect(done.finishedAt).not.toBeNull()
        }))

      test("completeAll records many attempts in one write, each fenced by its own lease", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids = [yield* enqueueOne(), yield* enqueueOne(), yield* enqueueOne()]
          const [a, b, c] = [yield* claimOne("w1"), yield* claimOne("w1"), yield* claimOne("w1")]
          yield* store.complete(c!.lease, "earlier")
          const stolen = { ...b!.lease, owner: "w2" }
          const recorded = yield* store.completeAll([
            { lease: a!.lease, result: { n: 1 } },
            { lease: stolen, result: "stolen" },
            { lease: c!.lease, result: "again" },
            { lease: b!.lease, result: { n: 2 } },
            { lease: a!.lease, result: "twice" }
          ])
          // A lease listed twice is recorded once, with its first result.
          expect(recorded).toEqual([true, false, false, true, false])
          expect(yield* getTask(ids[0]!)).toMatchObject({ status: "succeeded", result: { n: 1 } })
          expect(yield* getTask(ids[1]!)).toMatchObject({ status: "succeeded", result: { n: 2 } })
          expect(yield* getTask(ids[2]!)).toMatchObject({ status: "succeeded", result: "earlier" })
          expect(yield* store.completeAll([])).toEqual([])
        }))

      test("completeAll with deleteSucceeded deletes each task whose lease it holds, fenced, and frees its key", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids = [yield* enqueueOne({ idempotencyKey: "k" }), yield* enqueueOne(), yield* enqueueOne()]
          const [a, b, c] = [yield* claimOne("w1"), yield* claimOne("w1"), yield* claimOne("w1")]
          const stolen = { ...b!.lease, owner: "w2" }
          const recorded = yield* store.completeAll([
            { lease: a!.lease, result: { n: 1 } },
            { lease: stolen, result: "stolen" },
            { lease: c!.lease, result: null },
            { lease: a!.lease, result: "twice" }
          ], { deleteSucceeded: true })
          expect(recorded).toEqual([true, false, true, false])
          expect(yield* store.getTask(ids[0]!)).toEqual(Option.none())
          expect(yield* store.getTask(ids[2]!)).toEqual(Option.none())
          // The lease it did not hold: still running, still its owner's.
          expect(yield* getTask(ids[1]!)).toMatchObject({ status: "running", leaseOwner: "w1" })
          expect(yield* store.completeAll([{ lease: b!.lease, result: null }], { deleteSucceeded: false })).toEqual([true])
          expect(yield* getTask(ids[1]!)).toMatchObject({ status: "succeeded" })
          // A send with the deleted task's key enqueues a new task.
          const again = yield* enqueueOne({ idempotencyKey: "k" })
          expect(again).not.toBe(ids[0])
          expect(yield* getTask(again)).toMatchObject({ status: "queued" })
        }))

      test("a settled attempt is fenced: writing it again fails with LeaseLost", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          yield* store.complete(lease, "first")
          expect((yield* failure(store.complete(lease, "second")))._tag).toBe("LeaseLost")
          expect((yield* failure(store.fail(lease, { kind: "error", message: "late", retryable: true })))._tag).toBe(
            "LeaseLost"
          )
          expect((yield* failure(store.release(lease)))._tag).toBe("LeaseLost")
          expect(yield* store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: ttl })).toEqual([])
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "succeeded", result: "first", errors: [] })
        }))

      test("after a takeover the old owner's writes fail with LeaseLost", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const old = yield* claimOne("w1")
          yield* advance(harness, Duration.millis(ttl + 1))
          const taken = yield* claimEventually("w2")
          expect(taken.lease).toEqual({ taskId: id, attempt: 2, owner: "w2" })
          expect((yield* failure(store.complete(old.lease, "stale")))._tag).toBe("LeaseLost")
          expect((yield* failure(store.fail(old.lease, { kind: "error", message: "stale", retryable: true })))._tag)
            .toBe("LeaseLost")
          expect((yield* failure(store.release(old.lease)))._tag).toBe("LeaseLost")
          expect(yield* store.heartbeat({ workerId: "w1", leases: [old.lease], leaseTtlMillis: ttl })).toEqual([])
          expect(yield* getTask(id)).toMatchObject({ status: "running", attempt: 2, leaseOwner: "w2" })
          yield* store.complete(taken.lease, "fresh")
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", attempt: 2, result: "fresh" })
        }))

      test("heartbeat returns only the leases still held, and extends them", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const [kept, cancelled] = yield* store.enqueue([request(), request()])
          const claimed = yield* claim("w1")
          expect(claimed).toHaveLength(2)
          const leaseOf = (id: string) => claimed.find((task) => task.lease.taskId === id)!.lease
          const before = (yield* getTask(kept!)).leaseExpiresAt!.getTime()
          yield* store.cancel(cancelled!)
          yield* advance(harness, Duration.millis(ttl / 2))
          const held = yield* store.heartbeat({
            workerId: "w1",
            leases: [leaseOf(kept!), leaseOf(cancelled!), { ...leaseOf(kept!), attempt: 7 }],
            leaseTtlMillis: 2 * ttl
          })
          expect(held).toEqual([leaseOf(kept!)])
          const after = (yield* getTask(kept!)).leaseExpiresAt!.getTime()
          expect(after).toBeGreaterThan(before)
          if (testClock) expect(after).toBe((yield* now) + 2 * ttl)
          expect(yield* store.heartbeat({ workerId: "w1", leases: [], leaseTtlMillis: ttl })).toEqual([])
        }))

      test("an expired lease is not renewed, even before anyone takes it over", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const [claimed] = yield* claim("w1")
          yield* advance(harness, Duration.millis(ttl + 5))
          const held = yield* store.heartbeat({ workerId: "w1", leases: [claimed!.lease], leaseTtlMillis: ttl })
          expect(held).toEqual([])
          expect((yield* getTask(id)).leaseExpiresAt!.getTime()).toBeLessThanOrEqual(yield* now)
        }))

      test("a renewed lease outlives its original TTL: nobody can claim the task", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          const firstExpiry = (yield* getTask(id)).leaseExpiresAt!.getTime()
          for (let beat = 0; beat < 3; beat++) {
            yield* advance(harness, Duration.millis(ttl * 0.6))
            expect(yield* store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: ttl })).toEqual([lease])
            expect(yield* claim("w2")).toEqual([])
          }
          expect(yield* now).toBeGreaterThan(firstExpiry)
          expect(yield* getTask(id)).toMatchObject({ status: "running", attempt: 1, leaseOwner: "w1", leaseLosses: 0 })
          yield* store.complete(lease, null)
          expect((yield* getTask(id)).status).toBe("succeeded")
        }))
    })

    describe("lease expiry and takeover", () => {
      test("an expired lease is taken over as the next attempt and recorded as lease_expired", () =>
        Effect.gen(function*() {
          const id = yield* enqueueOne()
          yield* claimOne("w1")
          expect(yield* claim("w2")).toEqual([])
          yield* advance(harness, Duration.millis(ttl + 1))
          const taken = yield* claimEventually("w2")
          expect(taken).toMatchObject({
            lease: { taskId: id, attempt: 2, owner: "w2" },
            takeover: true,
            leaseLosses: 1
          })
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "running", attempt: 2, leaseOwner: "w2", leaseLosses: 1 })
          expect(task.errors).toHaveLength(1)
          expect(task.errors[0]).toMatchObject({ attempt: 1, kind: "lease_expired", worker: "w1" })
        }))

      test("a takeover waits for the stored backoff after the lease expiry", () =>
        Effect.gen(function*() {
          const backoff = 2 * unit
          const id = yield* enqueueOne({ backoff: [backoff, HOUR, HOUR] })
          yield* claimOne("w1")
          const expiry = (yield* getTask(id)).leaseExpiresAt!.getTime()
          yield* advanceTo(harness, expiry + 1)
          if (testClock) {
            expect(yield* claim("w2")).toEqual([])
            yield* advanceTo(harness, expiry + backoff - 1)
            expect(yield* claim("w2")).toEqual([])
            yield* advanceTo(harness, expiry + backoff)
          }
          const taken = yield* claimEventually("w2")
          expect(taken).toMatchObject({ lease: { attempt: 2, owner: "w2" }, takeover: true })
          expectClose(taken.dueAt.getTime(), expiry + backoff)
          expect(claimedAt(yield* getTask(id), ttl)).toBeGreaterThanOrEqual(expiry + backoff - millis(d.precision))
        }))

      test("a task whose every lease expires ends failed after maxRetries + 1 attempts (claim)", () =>
        Effect.gen(function*() {
          const id = yield* enqueueOne({ maxRetries: 2, backoff: [0, 0] })
          yield* expireEveryAttempt(id, 3)
          expect(yield* claim("w4")).toEqual([])
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "failed", attempt: 3, leaseLosses: 3, leaseOwner: null })
          expect(task.finishedAt).not.toBeNull()
          expect(task.errors.map((error) => [error.attempt, error.kind])).toEqual([
            [1, "lease_expired"],
            [2, "lease_expired"],
            [3, "lease_expired"]
          ])
          yield* advance(harness, d.unit)
          expect(yield* claim("w5")).toEqual([])
        }))

      test("a task whose every lease expires ends failed after maxRetries + 1 attempts (maintenance)", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const exhausted = yield* enqueueOne({ maxRetries: 1, backoff: [0] })
          yield* expireEveryAttempt(exhausted, 2)
          // Another expired task with retries left must stay claimable.
          const spare = yield* enqueueOne({ name: "t.b", maxRetries: 1, backoff: [0] })
          yield* claimOne("w9", { names: ["t.b"] })
          yield* advance(harness, Duration.millis(ttl + 1))
          yield* store.maintenance({ retentionMillis: HOUR, workerTimeoutMillis: HOUR })
          const task = yield* getTask(exhausted)
          expect(task).toMatchObject({ status: "failed", attempt: 2, leaseLosses: 2, leaseOwner: null })
          expect(task.errors.map((error) => error.kind)).toEqual(["lease_expired", "lease_expired"])
          const taken = yield* claimEventually("w10", { names: ["t.a", "t.b"] })
          expect(taken.lease).toMatchObject({ taskId: spare, attempt: 2 })
        }))
    })

    describe("fail", () => {
      test("a retryable failure re-queues the task at failure time + backoff[attempt - 1]", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const backoff = [unit, 2 * unit, 3 * unit]
          const id = yield* enqueueOne({ maxRetries: 3, backoff })
          for (let attempt = 1; attempt <= 2; attempt++) {
            const claimed = yield* claimEventually("w1")
            expect(claimed.lease.attempt).toBe(attempt)
            if (attempt > 1) {
              const previous = (yield* getTask(id)).errors[attempt - 2]!
              expect(claimedAt(yield* getTask(id), ttl)).toBeGreaterThanOrEqual(
                previous.at.getTime() + backoff[attempt - 2]! - millis(d.precision)
              )
            }
            const outcome = yield* store.fail(claimed.lease, {
              kind: "error",
              message: `boom ${attempt}`,
              cause: `Error: boom ${attempt}\n    at handler`,
              retryable: true
            })
            expect(outcome._tag).toBe("Retrying")
            const task = yield* getTask(id)
            expect(task).toMatchObject({ status: "queued", attempt, leaseOwner: null, leaseExpiresAt: null })
            expect(task.errors).toHaveLength(attempt)
            const error = task.errors[attempt - 1]!
            expect(error).toMatchObject({
              attempt,
              kind: "error",
              message: `boom ${attempt}`,
              cause: `Error: boom ${attempt}\n    at handler`,
              worker: "w1"
            })
            expect(error.at).toBeInstanceOf(Date)
            if (outcome._tag === "Retrying") expect(outcome.runAt.getTime()).toBe(task.runAt.getTime())
            expectClose(task.runAt.getTime() - error.at.getTime(), backoff[attempt - 1]!)
            if (testClock) {
              expect(yield* claim("w1")).toEqual([])
              yield* advanceTo(harness, task.runAt.getTime() - 1)
              expect(yield* claim("w1")).toEqual([])
              yield* advanceTo(harness, task.runAt.getTime())
            }
          }
          expect((yield* claimEventually("w1")).lease.attempt).toBe(3)
        }))

      test("a non-retryable failure ends the task failed at once", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ maxRetries: 3, backoff: [0, 0, 0] })
          const { lease } = yield* claimOne("w1")
          const outcome = yield* store.fail(lease, { kind: "permanent", message: "no such invoice", retryable: false })
          expect(outcome).toEqual({ _tag: "Dead" })
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "failed", attempt: 1, leaseOwner: null })
          expect(task.finishedAt).not.toBeNull()
          expect(task.errors).toMatchObject([{ attempt: 1, kind: "permanent", message: "no such invoice" }])
          expect(yield* claim("w1")).toEqual([])
        }))

      test("the failure of the last attempt is Dead: the task ends failed with its full history", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ maxRetries: 1, backoff: [0] })
          const first = yield* claimOne("w1")
          expect((yield* store.fail(first.lease, { kind: "timeout", message: "slow", retryable: true }))._tag).toBe(
            "Retrying"
          )
          const second = yield* claimEventually("w2")
          expect(second.lease.attempt).toBe(2)
          expect(yield* store.fail(second.lease, { kind: "defect", message: "bug", cause: "Error: bug", retryable: true }))
            .toEqual({ _tag: "Dead" })
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "failed", attempt: 2 })
          expect(task.errors.map((error) => [error.attempt, error.kind, error.message, error.worker])).toEqual([
            [1, "timeout", "slow", "w1"],
            [2, "defect", "bug", "w2"]
          ])
          expect(yield* claim("w3")).toEqual([])
        }))

      test("with maxRetries 0 the first failure is Dead", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ maxRetries: 0, backoff: [] })
          const { lease } = yield* claimOne("w1")
          expect(yield* store.fail(lease, { kind: "error", message: "once", retryable: true })).toEqual({ _tag: "Dead" })
          expect(yield* getTask(id)).toMatchObject({ status: "failed", attempt: 1 })
        }))
    })

    describe("release", () => {
      test("release re-queues the task at once without charging the attempt", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ maxRetries: 0, backoff: [] })
          const first = yield* claimOne("w1")
          yield* store.release(first.lease)
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "queued", leaseOwner: null, leaseExpiresAt: null, errors: [] })
          expect(task.finishedAt).toBeNull()
          // Due at once: claimable without moving time.
          const second = yield* claimOne("w2")
          expect(second).toMatchObject({ lease: { taskId: id, attempt: 1, owner: "w2" }, takeover: false })
          // The releasing worker's lease is dead.
          expect((yield* failure(store.complete(first.lease, "stale")))._tag).toBe("LeaseLost")
          yield* store.release(second.lease)
          const third = yield* claimOne("w3")
          expect(third.lease.attempt).toBe(1)
          // Releases never used up the budget: maxRetries 0 still allows this attempt to succeed.
          yield* store.complete(third.lease, "done")
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", attempt: 1, result: "done", errors: [] })
        }))
      test("releaseAll gives many leases back in one write, each fenced by its own lease", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids = [yield* enqueueOne(), yield* enqueueOne(), yield* enqueueOne()]
          const [a, b, c] = [yield* claimOne("w1"), yield* claimOne("w1"), yield* claimOne("w1")]
          yield* store.complete(c!.lease, "done")
          const stolen = { ...b!.lease, owner: "w2" }
          const released = yield* store.releaseAll([a!.lease, stolen, c!.lease, b!.lease, a!.lease])
          // A lease listed twice is released once; a lost or settled one is not touched.
          expect(released).toEqual([true, false, false, true, false])
          for (const id of [ids[0]!, ids[1]!]) {
            expect(yield* getTask(id)).toMatchObject({ status: "queued", attempt: 0, leaseOwner: null, leaseExpiresAt: null })
          }
          expect(yield* getTask(ids[2]!)).toMatchObject({ status: "succeeded", result: "done" })
          // Due at once, and the releasing worker's leases are dead.
          const again = [yield* claimOne("w3"), yield* claimOne("w3")]
          expect(again.map((task) => task.lease.taskId).sort()).toEqual([ids[0]!, ids[1]!].sort())
          expect(again.map((task) => task.lease.attempt)).toEqual([1, 1])
          expect((yield* failure(store.complete(a!.lease, "stale")))._tag).toBe("LeaseLost")
          expect(yield* store.releaseAll([])).toEqual([])
        }))
    })

    describe("cancel and retry", () => {
      test("cancelling a queued task makes it unclaimable", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const info = yield* store.cancel(id)
          expect(info).toMatchObject({ id, status: "cancelled" })
          const task = yield* getTask(id)
          expect(task.status).toBe("cancelled")
          expect(task.finishedAt).not.toBeNull()
          expect(yield* claim("w1")).toEqual([])
        }))

      test("cancelling a running task revokes its lease", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          expect((yield* store.cancel(id)).status).toBe("cancelled")
          expect(yield* store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: ttl })).toEqual([])
          expect((yield* failure(store.complete(lease, "late")))._tag).toBe("LeaseLost")
          expect((yield* failure(store.fail(lease, { kind: "error", message: "late", retryable: true })))._tag).toBe(
            "LeaseLost"
          )
          expect((yield* failure(store.release(lease)))._tag).toBe("LeaseLost")
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "cancelled", leaseOwner: null })
          yield* advance(harness, Duration.millis(ttl + 1))
          expect(yield* claim("w2")).toEqual([])
          expect((yield* getTask(id)).status).toBe("cancelled")
        }))

      test("cancel and retry of an unknown id fail with TaskNotFound", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const cancelError = yield* failure(store.cancel("999999"))
          expect(cancelError).toMatchObject({ _tag: "TaskNotFound", taskId: "999999" })
          const retryError = yield* failure(store.retry("999999"))
          expect(retryError).toMatchObject({ _tag: "TaskNotFound", taskId: "999999" })
        }))

      test("cancelling a finished task leaves it as it is", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          yield* store.complete(lease, 42)
          expect((yield* store.cancel(id)).status).toBe("succeeded")
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", result: 42 })
        }))

      test("retry re-queues a failed task with a fresh budget; attempt numbers keep increasing", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne({ maxRetries: 1, backoff: [0] })
          const failWith = (lease: Lease) => store.fail(lease, { kind: "error", message: "no", retryable: true })
          const first = yield* claimOne("w1")
          yield* failWith(first.lease)
          const second = yield* claimEventually("w1")
          expect(yield* failWith(second.lease)).toEqual({ _tag: "Dead" })
          expect((yield* getTask(id)).status).toBe("failed")
          const info = yield* store.retry(id)
          expect(info).toMatchObject({ id, status: "queued", finishedAt: null })
          const third = yield* claimEventually("w2")
          expect(third.lease.attempt).toBe(3)
          // The old leases stay dead.
          expect((yield* failure(store.complete(first.lease, "stale")))._tag).toBe("LeaseLost")
          expect((yield* failure(store.complete(second.lease, "stale")))._tag).toBe("LeaseLost")
          expect((yield* failWith(third.lease))._tag).toBe("Retrying")
          const fourth = yield* claimEventually("w2")
          expect(fourth.lease.attempt).toBe(4)
          expect(yield* failWith(fourth.lease)).toEqual({ _tag: "Dead" })
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "failed", attempt: 4 })
          expect(task.errors.map((error) => error.attempt)).toEqual([1, 2, 3, 4])
        }))

      test("retry re-queues a cancelled task; its old lease stays dead", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          const first = yield* claimOne("w1")
          yield* store.cancel(id)
          expect((yield* store.retry(id)).status).toBe("queued")
          const second = yield* claimOne("w1")
          expect(second.lease.taskId).toBe(id)
          expect(second.lease.attempt).toBeGreaterThan(first.lease.attempt)
          expect((yield* failure(store.complete(first.lease, "stale")))._tag).toBe("LeaseLost")
          yield* store.complete(second.lease, "fresh")
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", result: "fresh" })
        }))
    })

    describe("maxConcurrency", () => {
      test("limits cap the running attempts of a task name across workers", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* store.enqueue([request(), request(), request(), request({ name: "t.b" })])
          const limits = { "t.a": 1 }
          const w1 = yield* claim("w1", { limits })
          expect(w1.map((task) => task.name).sort()).toEqual(["t.a", "t.b"])
          expect(yield* claim("w2", { limits })).toEqual([])
          yield* store.complete(w1.find((task) => task.name === "t.a")!.lease, null)
          const w2 = yield* claim("w2", { limits })
          expect(w2.map((task) => task.name)).toEqual(["t.a"])
          expect(yield* claim("w1", { limits })).toEqual([])
        }))

      test("a limit of 2 is shared by two workers", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* store.enqueue(Array.from({ length: 4 }, () => request()))
          const limits = { "t.a": 2 }
          expect(yield* claim("w1", { limits, max: 1 })).toHaveLength(1)
          expect(yield* claim("w2", { limits })).toHaveLength(1)
          expect(yield* claim("w1", { limits })).toEqual([])
          expect(yield* claim("w2", { limits })).toEqual([])
          // Without limits the rest is claimable.
          expect(yield* claim("w3")).toHaveLength(2)
        }))

      test("an expired lease frees its slot", () =>
        Effect.gen(function*() {
          const [stuck, waiting] = yield* Effect.flatMap(TaskStore, (store) =>
            store.enqueue([request({ backoff: [HOUR, HOUR, HOUR] }), request({ delayMillis: 1 })]))
          const limits = { "t.a": 1 }
          yield* advance(harness, Duration.millis(1))
          const first = yield* claimOne("w1", { limits })
          expect(first.lease.taskId).toBe(stuck)
          expect(yield* claim("w2", { limits })).toEqual([])
          yield* advance(harness, Duration.millis(ttl + 1))
          const second = yield* claimEventually("w2", { limits })
          expect(second.lease.taskId).toBe(waiting)
        }))
    })

    describe("idempotency records", () => {
      test("the first writer wins", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const id = yield* enqueueOne()
          expect(yield* store.getIdempotent("charge:1")).toEqual(Option.none())
          expect(yield* store.putIdempotent("charge:1", { chargeId: "ch_1" }, id)).toEqual({ chargeId: "ch_1" })
          expect(yield* store.getIdempotent("charge:1")).toEqual(Option.some({ chargeId: "ch_1" }))
          expect(yield* store.putIdempotent("charge:1", { chargeId: "ch_2" }, id)).toEqual({ chargeId: "ch_1" })
          expect(yield* store.getIdempotent("charge:1")).toEqual(Option.some({ chargeId: "ch_1" }))
          expect(yield* store.getIdempotent("charge:2")).toEqual(Option.none())
        }))

      test("a stored null is a record, not an absence", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          expect(yield* store.putIdempotent("done:1", null, undefined)).toBeNull()
          expect(yield* store.getIdempotent("done:1")).toEqual(Option.some(null))
          expect(yield* store.putIdempotent("done:1", "other", undefined)).toBeNull()
        }))

      test("racing writers all get the one stored value", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const results = yield* Effect.all(
            Array.from({ length: 8 }, (_, n) => store.putIdempotent("race", { n }, undefined)),
            { concurrency: "unbounded" }
          )
          const stored = yield* store.getIdempotent("race")
          expect(Option.isSome(stored)).toBe(true)
          for (const result of results) expect(result).toEqual(Option.getOrThrow(stored))
        }))
    })

    describe("workers and maintenance", () => {
      const registration = (id: string) => ({
        id,
        name: `name-${id}`,
        host: "host-1",
        pid: 4242,
        queues: ["q1", "q2"],
        concurrency: 8
      })

      test("register, heartbeat, deregister and list workers", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* store.registerWorker(registration("w1"))
          const [listed] = yield* store.listWorkers
          expect(listed).toMatchObject({ ...registration("w1"), status: "running", inFlight: 0 })
          yield* enqueueOne()
          const { lease } = yield* claimOne("w1")
          yield* advance(harness, d.step)
          yield* store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: ttl })
          const [beaten] = yield* store.listWorkers
          expect(beaten).toMatchObject({ id: "w1", status: "running", inFlight: 1 })
          expect(beaten!.lastHeartbeatAt.getTime()).toBeGreaterThan(listed!.lastHeartbeatAt.getTime())
          expect(beaten!.startedAt.getTime()).toBe(listed!.startedAt.getTime())
          yield* store.deregisterWorker("w1")
          const [stopped] = yield* store.listWorkers
          expect(stopped).toMatchObject({ id: "w1", status: "stopped" })
          // Deregistering an unknown worker is harmless.
          yield* store.deregisterWorker("nobody")
        }))

      test("maintenance marks a silent worker dead", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          yield* store.registerWorker(registration("silent"))
          yield* store.registerWorker(registration("alive"))
          yield* store.registerWorker(registration("gone"))
          yield* store.deregisterWorker("gone")
          yield* advance(harness, Duration.millis(4 * unit))
          yield* store.heartbeat({ workerId: "alive", leases: [], leaseTtlMillis: ttl })
          yield* store.maintenance({ retentionMillis: HOUR, workerTimeoutMillis: 2 * unit })
          const byId = new Map((yield* store.listWorkers).map((worker) => [worker.id, worker.status]))
          expect(byId.get("silent")).toBe("dead")
          expect(byId.get("alive")).toBe("running")
          expect(byId.get("gone")).toBe("stopped")
        }))

      test("maintenance prunes succeeded and cancelled tasks older than retention, and keeps the rest", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const retention = 2 * unit
          const [oldSucceeded, oldCancelled, oldFailed, oldQueued, oldRunning] = yield* store.enqueue([
            request({ payload: "s", idempotencyKey: "old" }),
            request({ payload: "c" }),
            request({ payload: "f", maxRetries: 0, backoff: [] }),
            request({ name: "t.b", payload: "q" }),
            request({ payload: "r" })
          ])
          const claimed = yield* claim("w1", { names: ["t.a"], leaseTtlMillis: HOUR })
          const leaseOf = (id: string) => claimed.find((task) => task.lease.taskId === id)!.lease
          yield* store.complete(leaseOf(oldSucceeded!), "old")
          yield* store.cancel(oldCancelled!)
          yield* store.fail(leaseOf(oldFailed!), { kind: "error", message: "x", retryable: true })
          yield* advance(harness, Duration.millis(2 * retention))
          const newSucceeded = yield* enqueueOne({ payload: "new" })
          const fresh = yield* claimOne("w2", { names: ["t.a"] })
          expect(fresh.lease.taskId).toBe(newSucceeded)
          yield* store.complete(fresh.lease, "new")
          yield* store.maintenance({ retentionMillis: retention, workerTimeoutMillis: HOUR })
          expect(yield* store.getTask(oldSucceeded!)).toEqual(Option.none())
          expect(yield* store.getTask(oldCancelled!)).toEqual(Option.none())
          expect((yield* getTask(oldFailed!)).status).toBe("failed")
          expect((yield* getTask(oldQueued!)).status).toBe("queued")
          expect((yield* getTask(oldRunning!)).status).toBe("running")
          expect((yield* getTask(newSucceeded)).status).toBe("succeeded")
          // The key of a pruned task is free again.
          const reused = yield* enqueueOne({ idempotencyKey: "old" })
          expect(reused).not.toBe(oldSucceeded)
        }))
    })

    describe("stats and listTasks", () => {
      test("stats counts tasks per queue and status", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const [succeeded, failed, cancelled, running] = yield* store.enqueue([
            request(),
            request({ maxRetries: 0, backoff: [] }),
            request(),
            request()
          ])
          const claimed = yield* claim("w1", { leaseTtlMillis: HOUR })
          const leaseOf = (id: string) => claimed.find((task) => task.lease.taskId === id)!.lease
          yield* store.complete(leaseOf(succeeded!), null)
          yield* store.fail(leaseOf(failed!), { kind: "error", message: "x", retryable: true })
          yield* store.cancel(cancelled!)
          expect(leaseOf(running!).attempt).toBe(1)
          yield* store.enqueue([
            request(),
            request({ name: "t.b" }),
            request({ delayMillis: HOUR }),
            request({ queue: "q2" })
          ])
          const stats = yield* store.stats
          const q1 = stats.find((entry) => entry.queue === "q1")
          const q2 = stats.find((entry) => entry.queue === "q2")
          expect(q1).toEqual({
            queue: "q1",
            queued: 2,
            scheduled: 1,
            running: 1,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
            succeededLastHour: 1
          })
          expect(q2).toEqual({
            queue: "q2",
            queued: 1,
            scheduled: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            succeededLastHour: 0
          })
        }))

      test("listTasks filters by status, queue and name, newest first, up to limit", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const ids: Array<string> = []
          for (const overrides of [
            { name: "t.a", queue: "q1" },
            { name: "t.b", queue: "q1" },
            { name: "t.a", queue: "q2" },
            { name: "t.a", queue: "q1" }
          ]) {
            ids.push(yield* enqueueOne(overrides))
            yield* advance(harness, d.step)
          }
          const [a1, b1, a2, a1b] = ids
          yield* store.cancel(a1b!)
          const idsOf = (tasks: ReadonlyArray<TaskInfo>) => tasks.map((task) => task.id)
          expect(idsOf(yield* store.listTasks({}))).toEqual([a1b, a2, b1, a1])
          expect(idsOf(yield* store.listTasks({ queue: "q1" }))).toEqual([a1b, b1, a1])
          expect(idsOf(yield* store.listTasks({ name: "t.a" }))).toEqual([a1b, a2, a1])
          expect(idsOf(yield* store.listTasks({ status: "queued", name: "t.a" }))).toEqual([a2, a1])
          expect(idsOf(yield* store.listTasks({ status: "cancelled" }))).toEqual([a1b])
          expect(idsOf(yield* store.listTasks({ status: "running" }))).toEqual([])
          expect(idsOf(yield* store.listTasks({ limit: 2 }))).toEqual([a1b, a2])
          expect(idsOf(yield* store.listTasks({ queue: "q1", name: "t.b", status: "queued" }))).toEqual([b1])
        }))
    })
  })
}
