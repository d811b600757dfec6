/**
 * Recording successful attempts as a server-side function,
 * `<schema>.complete_tasks`, for the same reason as `claim_due`: a batch of
 * completions costs more to plan than to run.
 *
 * Parameters, one array element per lease: $1 task ids, $2 attempts, $3
 * owners, $4 results (JSON text). Answers the 1-based positions of the leases
 * recorded, in one array: a position missing from it was a lost lease.
 * Callers list each lease once.
 *
 * Each row is written only if it still holds that lease (fenced): its
 * attempt and owner match, and an owner is set only while a task runs (the
 * constraint `tasks_lease_owner_while_running`). Leaving the status out of
 * the condition keeps the plan on the primary key: with it, a partial index
 * of running tasks could serve the join, and under statistics that counted
 * few running tasks Postgres chose one, scanning every running task for
 * each batch.
 */

/** The function's body query, with its parameters as `$1`…`$4`; also what the plan test explains. */
export const query = (schema: string): string => `
  WITH recorded AS (
    UPDATE ${schema}.tasks t SET status = 'succeeded', result = b.result::jsonb, lease_owner = NULL,
      lease_expires_at = NULL, finished_at = now(), updated_at = now()
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[]) WITH ORDINALITY AS b(id, attempt, owner, result, position)
    WHERE t.id = b.id AND t.attempt = b.attempt AND t.lease_owner = b.owner
    RETURNING b.position
  )
  SELECT coalesce(array_agg(position::int), '{}') FROM recorded`

/** The statement that creates the function (migration 4). */
export const createFunction = (schema: string): string => `
  CREATE FUNCTION ${schema}.complete_tasks(bigint[], integer[], text[], text[])
  RETURNS integer[]
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $complete_tasks$
  DECLARE
    positions integer[];
  BEGIN
    ${query(schema)} INTO positions;
    RETURN positions;
  END
  $complete_tasks$`
