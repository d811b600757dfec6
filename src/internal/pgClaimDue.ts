/**
 * The common claim (no task with a `maxConcurrency` among the names) as a
 * server-side function, `<schema>.claim_due`. A statement sent from the
 * client is planned on every call, and planning this one costs more than
 * running it; a PL/pgSQL function keeps its plan for the session. It is told
 * to keep the generic plan (`plan_cache_mode = force_generic_plan`): left to
 * choose, Postgres kept planning each call anew (1.0 ms a claim against
 * 0.6 ms). The plan test checks that generic plan. The query is the same as
 * the one PgTaskStore builds for the limited case, without the per-name
 * slots.
 *
 * Parameters: $1 queues (in the order they are served), $2 task names,
 * $3 how many to claim, $4 lease in milliseconds, $5 the worker's id.
 */

/** The function's body query, with its parameters as `$1`…`$5`; also what the plan test explains. */
export const query = (schema: string): string => `
  WITH candidates AS (
    SELECT c.id, c.status, c.run_at FROM unnest($1::text[]) WITH ORDINALITY AS q(queue, pos)
    CROSS JOIN LATERAL (
      SELECT l.*, row_number() OVER () AS rank FROM (
        SELECT t.id, t.name, t.queue, t.status, t.priority, t.run_at FROM ${schema}.tasks t
        WHERE t.queue = q.queue
          AND t.status IN ('queued', 'running')
          AND t.run_at <= now()
          AND t.name = ANY($2::text[])
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
      ) l
    ) c
    ORDER BY c.rank, c.priority DESC, q.pos, c.run_at, c.id
    LIMIT $3
  ), decided AS (
    SELECT c.id, c.status AS previous_status, c.run_at AS due_at,
      (c.status = 'running' AND t.attempt > t.max_retries) AS exhausted,
      clock_timestamp() + make_interval(secs => $4::double precision / 1000) AS lease_until
    FROM candidates c JOIN ${schema}.tasks t ON t.id = c.id
  )
  UPDATE ${schema}.tasks t SET
    status = CASE WHEN d.exhausted THEN 'failed' ELSE 'running' END,
    attempt = CASE WHEN d.exhausted THEN t.attempt ELSE t.attempt + 1 END,
    errors = CASE WHEN d.previous_status = 'running' THEN t.errors || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
      'attempt', t.attempt, 'kind', 'lease_expired', 'message', 'lease of worker ' || t.lease_owner || ' expired',
      'worker', t.lease_owner, 'at', t.lease_expires_at))) ELSE t.errors END,
    lease_losses = t.lease_losses + CASE WHEN d.previous_status = 'running' THEN 1 ELSE 0 END,
    lease_owner = CASE WHEN d.exhausted THEN NULL ELSE $5::text END,
    lease_expires_at = CASE WHEN d.exhausted THEN NULL ELSE d.lease_until END,
    run_at = CASE WHEN d.exhausted THEN t.run_at
      ELSE d.lease_until
        + CASE WHEN t.attempt + 1 > t.max_retries THEN interval '0' ELSE ${schema}.retry_delay(t.backoff, t.attempt + 1) END
      END,
    finished_at = CASE WHEN d.exhausted THEN now() ELSE NULL END,
    updated_at = now()
  FROM decided d
  WHERE t.id = d.id
  RETURNING t.id, t.name, t.queue, t.status, t.payload, t.priority, t.attempt, t.max_retries, t.lease_losses,
    d.previous_status, d.due_at, t.created_at, t.trace_parent`

/** The statement that creates the function (migration 2). */
export const createFunction = (schema: string): string => `
  CREATE FUNCTION ${schema}.claim_due(text[], text[], integer, double precision, text)
  RETURNS TABLE (
    id bigint, name text, queue text, status text, payload jsonb, priority integer, attempt integer,
    max_retries integer, lease_losses integer, previous_status text, due_at timestamptz, created_at timestamptz,
    trace_parent text
  )
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $claim_due$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY ${query(schema)};
  END
  $claim_due$`
