/**
 * Claiming in Postgres as server-side functions. A statement sent from the
 * client is planned on every call, and planning a claim costs more than
 * running it; a PL/pgSQL function keeps its plan for the session. Each is
 * told to keep the generic plan (`plan_cache_mode = force_generic_plan`):
 * left to choose, Postgres kept planning each call anew (1.0 ms a claim
 * against 0.6 ms). The plan test checks that generic plan.
 *
 * - `<schema>.lease_batch(candidates, lease_ms, worker)` leases tasks the
 *   caller has already locked (`FOR UPDATE`): a queued task starts its next
 *   attempt; a running one whose lease expired is taken over (the lost
 *   attempt recorded as `lease_expired`), or ends `failed` when it has no
 *   retries left. It answers the tasks now leased to `worker`, in the order
 *   given, as one JSON object of columns (`{"id": [...], "name": [...],
 *   ...}`; the id as text, the due time in epoch milliseconds), or NULL when
 *   it leased none: one value to parse, with each key written once instead
 *   of once per task (a batch of 1,000 is 80 KB instead of 220 KB, built in
 *   a quarter of the time).
 * - `<schema>.claim_batch(queues, names, max, lease_ms, worker)` is the
 *   common claim (no task with a `maxConcurrency` among the names): it picks
 *   and locks the candidates and hands them to `lease_batch`. PgTaskStore
 *   builds the candidates of a limited claim itself and calls `lease_batch`
 *   too.
 *
 * `lease_tasks` and `claim_due` (migrations 2 to 6) are the same claim
 * answering one JSON object per task; they stay for workers of earlier
 * releases during a rolling deploy, and their text is kept as they were
 * created.
 */

/** The columns a claim reads of a locked task. */
const lockedColumns = "t.id, t.name, t.queue, t.status, t.priority, t.run_at"

/**
 * Locks up to `limit` due tasks of `queue` with one of `names`, in claim
 * order, and ranks them in that order. SQL text with the three given
 * expressions spliced in.
 *
 * Two locked scans (migration 6): queued tasks from `tasks_queued`, read in
 * the claim order, and running tasks whose lease expired from
 * `tasks_running` (for a running task `run_at` is the moment it may be
 * taken over: lease expiry plus the backoff of its attempt). Each takes up
 * to `limit`; the best `limit` of both are ranked, in the order a single
 * scan of both kinds would have given. Expired leases are rare, so the
 * second scan usually finds nothing and the merge sorts one batch already in
 * order.
 */
export const dueIn = (schema: string, queue: string, names: string, limit: string): string => `
  SELECT l.*, row_number() OVER () AS rank FROM (
    SELECT d.* FROM (
      SELECT * FROM (
        SELECT ${lockedColumns} FROM ${schema}.tasks t
        WHERE t.queue = ${queue} AND t.status = 'queued' AND t.run_at <= now() AND t.name = ${names}
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      ) queued
      UNION ALL
      SELECT * FROM (
        SELECT ${lockedColumns} FROM ${schema}.tasks t
        WHERE t.status = 'running' AND t.name = ${names} AND t.queue = ${queue} AND t.run_at <= now()
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      ) expired
    ) d
    ORDER BY d.priority DESC, d.run_at, d.id
    LIMIT ${limit}
  ) l`

/** A locked candidate row `alias` as a `claim_candidate`: what `lease_tasks` needs of its state before the claim. */
export const candidate = (schema: string, alias: string): string =>
  `(${alias}.id, ${alias}.status = 'running', ${alias}.run_at)::${schema}.claim_candidate`

/**
 * The common claim's query, leasing through the function `lease`, with its
 * parameters as `$1`…`$5`: $1 queues (in the order they are served), $2 task
 * names, $3 how many to claim, $4 lease in milliseconds, $5 the worker's id.
 *
 * Up to `max` due tasks per queue are locked and ranked in the claim order
 * (`dueIn`); the best `max` are taken round-robin across queues (a sort of
 * at most queues × max rows; between equals the queue listed first wins,
 * and workers rotate the list).
 */
const claimQuery = (schema: string, lease: string): string => `
  SELECT ${schema}.${lease}(ARRAY(
    SELECT ${candidate(schema, "c")} FROM unnest($1::text[]) WITH ORDINALITY AS q(queue, pos)
    CROSS JOIN LATERAL (${dueIn(schema, "q.queue", "ANY($2::text[])", "$3")}) c
    ORDER BY c.rank, c.priority DESC, q.pos, c.run_at, c.id
    LIMIT $3
  ), $4, $5)`

/** The common claim's query (`claim_batch`'s), as the plan test explains it. */
export const query = (schema: string): string => claimQuery(schema, "lease_batch")

/** The type of `lease_tasks`' candidates (migration 4). */
export const createCandidateType = (schema: string): string => `
  CREATE TYPE ${schema}.claim_candidate AS (id bigint, takeover boolean, due_at timestamptz)`

/**
 * The UPDATE that takes the leases, as the CTE `leased` of the lease
 * functions. Each candidate carries what its claim saw (running, so a
 * takeover; and when it became due), so each task's row is found once, by
 * the update itself.
 */
const leasedCte = (schema: string): string => `
    WITH leased AS (
      UPDATE ${schema}.tasks t SET
        status = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN 'failed' ELSE 'running' END,
        attempt = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN t.attempt ELSE t.attempt + 1 END,
        errors = CASE WHEN c.takeover THEN t.errors || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
          'attempt', t.attempt, 'kind', 'lease_expired', 'message', 'lease of worker ' || t.lease_owner || ' expired',
          'worker', t.lease_owner, 'at', t.lease_expires_at))) ELSE t.errors END,
        lease_losses = t.lease_losses + CASE WHEN c.takeover THEN 1 ELSE 0 END,
        lease_owner = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN NULL ELSE $3 END,
        lease_expires_at = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN NULL ELSE c.lease_until END,
        run_at = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN t.run_at
          ELSE c.lease_until
            + CASE WHEN t.attempt + 1 > t.max_retries THEN interval '0' ELSE ${schema}.retry_delay(t.backoff, t.attempt + 1) END
          END,
        finished_at = CASE WHEN c.takeover AND t.attempt > t.max_retries THEN now() ELSE NULL END,
        updated_at = now()
      FROM (
        SELECT c.*, clock_timestamp() + make_interval(secs => $2 / 1000) AS lease_until
        FROM unnest($1) WITH ORDINALITY AS c(id, takeover, due_at, position)
      ) c
      WHERE t.id = c.id
      RETURNING t.id::text AS id, t.name, t.queue, t.payload, t.priority, t.attempt, t.max_retries, t.lease_losses,
        c.takeover, trunc(extract(epoch FROM c.due_at) * 1000)::double precision AS due_at, t.trace_parent,
        t.status, c.position
    )`

/** `lease_tasks`' answer (migration 4): a JSON array of one object per leased task. */
const rowsAnswer = `
    SELECT coalesce(json_agg(l ORDER BY l.position), '[]') INTO claimed
    FROM (
      SELECT id, name, queue, payload, priority, attempt, max_retries, lease_losses, takeover, due_at, trace_parent, position
      FROM leased WHERE status = 'running'
    ) l;`

/** The columns of `lease_batch`'s answer, in the order given (migration 7). */
const leasedColumns = [
  "id", "name", "queue", "payload", "priority", "attempt", "max_retries", "lease_losses", "takeover", "due_at", "trace_parent"
] as const

/** `lease_batch`'s answer: one JSON object of columns, NULL when nothing was leased. */
const columnsAnswer = `
    SELECT json_build_object(${leasedColumns.map((column) => `'${column}', ${column === "payload" ? "json_agg" : "array_agg"}(${column})`).join(", ")})
    INTO claimed
    FROM (SELECT * FROM leased WHERE status = 'running' ORDER BY position) l
    HAVING count(*) > 0;`

const leaseFunction = (schema: string, name: string, answer: string): string => `
  CREATE FUNCTION ${schema}.${name}(${schema}.claim_candidate[], double precision, text)
  RETURNS json
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $${name}$
  DECLARE
    claimed json;
  BEGIN
${leasedCte(schema)}
${answer}
    RETURN claimed;
  END
  $${name}$`

/** The statement that creates `lease_tasks` (migration 4). */
export const createLeaseFunction = (schema: string): string => leaseFunction(schema, "lease_tasks", rowsAnswer)

/** The statement that creates `lease_batch` (migration 7). */
export const createLeaseBatchFunction = (schema: string): string => leaseFunction(schema, "lease_batch", columnsAnswer)

const claimFunction = (schema: string, name: string, lease: string): string => `
  CREATE OR REPLACE FUNCTION ${schema}.${name}(text[], text[], integer, double precision, text)
  RETURNS json
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $${name}$
  BEGIN
    RETURN (${claimQuery(schema, lease)});
  END
  $${name}$`

/** The statement that creates (or replaces) `claim_due` (migrations 2, 4 and 6). */
export const createFunction = (schema: string): string => claimFunction(schema, "claim_due", "lease_tasks")

/** The statement that creates `claim_batch` (migration 7). */
export const createBatchFunction = (schema: string): string => claimFunction(schema, "claim_batch", "lease_batch")
