/**
 * Claiming in Postgres as two server-side functions. A statement sent from
 * the client is planned on every call, and planning a claim costs more than
 * running it; a PL/pgSQL function keeps its plan for the session. Both are
 * told to keep the generic plan (`plan_cache_mode = force_generic_plan`):
 * left to choose, Postgres kept planning each call anew (1.0 ms a claim
 * against 0.6 ms). The plan test checks that generic plan.
 *
 * - `<schema>.lease_tasks(ids, lease_ms, worker)` leases tasks the caller has
 *   already locked (`FOR UPDATE`): a queued task starts its next attempt; a
 *   running one whose lease expired is taken over (the lost attempt recorded
 *   as `lease_expired`), or ends `failed` when it has no retries left. It
 *   answers the tasks now leased to `worker`, in the order given, as one JSON
 *   array of objects holding what the worker needs (the id as text, the due
 *   time in epoch milliseconds): one value to parse instead of a row per
 *   task, which halves the client's CPU per claimed task.
 * - `<schema>.claim_due(queues, names, max, lease_ms, worker)` is the common
 *   claim (no task with a `maxConcurrency` among the names): it picks and
 *   locks the candidates and hands them to `lease_tasks`. PgTaskStore builds
 *   the candidates of a limited claim itself and calls `lease_tasks` too.
 */

/**
 * Locks up to `limit` due tasks of `queue` with one of `names`, in claim
 * order, and ranks them in that order. SQL text with the three given
 * expressions spliced in.
 */
export const dueIn = (schema: string, queue: string, names: string, limit: string): string => `
  SELECT l.*, row_number() OVER () AS rank FROM (
    SELECT t.id, t.name, t.queue, t.priority, t.run_at FROM ${schema}.tasks t
    WHERE t.queue = ${queue}
      AND t.status IN ('queued', 'running')
      AND t.run_at <= now()
      AND t.name = ${names}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT ${limit}
    FOR UPDATE SKIP LOCKED
  ) l`

/**
 * The common claim's query, with its parameters as `$1`…`$5`: $1 queues (in
 * the order they are served), $2 task names, $3 how many to claim, $4 lease
 * in milliseconds, $5 the worker's id. Also what the plan test explains.
 *
 * Up to `max` due tasks per queue are locked (an index scan in the claim
 * order, so the rank is the scan order); the best `max` are taken
 * round-robin across queues (the only sort: at most queues × max rows;
 * between equals the queue listed first wins, and workers rotate the list).
 */
export const query = (schema: string): string => `
  SELECT ${schema}.lease_tasks(ARRAY(
    SELECT c.id FROM unnest($1::text[]) WITH ORDINALITY AS q(queue, pos)
    CROSS JOIN LATERAL (${dueIn(schema, "q.queue", "ANY($2::text[])", "$3")}) c
    ORDER BY c.rank, c.priority DESC, q.pos, c.run_at, c.id
    LIMIT $3
  ), $4, $5)`

/** The statement that creates `lease_tasks` (migration 4). */
export const createLeaseFunction = (schema: string): string => `
  CREATE FUNCTION ${schema}.lease_tasks(bigint[], double precision, text)
  RETURNS json
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $lease_tasks$
  DECLARE
    claimed json;
  BEGIN
    WITH decided AS (
      SELECT t.id, c.position, t.status = 'running' AS takeover, t.run_at AS due_at,
        (t.status = 'running' AND t.attempt > t.max_retries) AS exhausted,
        clock_timestamp() + make_interval(secs => $2 / 1000) AS lease_until
      FROM unnest($1) WITH ORDINALITY AS c(id, position) JOIN ${schema}.tasks t ON t.id = c.id
    ), leased AS (
      UPDATE ${schema}.tasks t SET
        status = CASE WHEN d.exhausted THEN 'failed' ELSE 'running' END,
        attempt = CASE WHEN d.exhausted THEN t.attempt ELSE t.attempt + 1 END,
        errors = CASE WHEN d.takeover THEN t.errors || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
          'attempt', t.attempt, 'kind', 'lease_expired', 'message', 'lease of worker ' || t.lease_owner || ' expired',
          'worker', t.lease_owner, 'at', t.lease_expires_at))) ELSE t.errors END,
        lease_losses = t.lease_losses + CASE WHEN d.takeover THEN 1 ELSE 0 END,
        lease_owner = CASE WHEN d.exhausted THEN NULL ELSE $3 END,
        lease_expires_at = CASE WHEN d.exhausted THEN NULL ELSE d.lease_until END,
        run_at = CASE WHEN d.exhausted THEN t.run_at
          ELSE d.lease_until
            + CASE WHEN t.attempt + 1 > t.max_retries THEN interval '0' ELSE ${schema}.retry_delay(t.backoff, t.attempt + 1) END
          END,
        finished_at = CASE WHEN d.exhausted THEN now() ELSE NULL END,
        updated_at = now()
      FROM decided d
      WHERE t.id = d.id
      RETURNING t.id::text AS id, t.name, t.queue, t.payload, t.priority, t.attempt, t.max_retries, t.lease_losses,
        d.takeover, trunc(extract(epoch FROM d.due_at) * 1000)::double precision AS due_at, t.trace_parent,
        d.exhausted, d.position
    )
    SELECT coalesce(json_agg(l ORDER BY l.position), '[]') INTO claimed
    FROM (
      SELECT id, name, queue, payload, priority, attempt, max_retries, lease_losses, takeover, due_at, trace_parent, position
      FROM leased WHERE NOT exhausted
    ) l;
    RETURN claimed;
  END
  $lease_tasks$`

/** The statement that creates `claim_due` (migrations 2 and 4). */
export const createFunction = (schema: string): string => `
  CREATE FUNCTION ${schema}.claim_due(text[], text[], integer, double precision, text)
  RETURNS json
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $claim_due$
  BEGIN
    RETURN (${query(schema)});
  END
  $claim_due$`
