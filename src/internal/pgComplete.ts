/**
 * Recording successful attempts as a server-side function,
 * `<schema>.complete_batch`, for the same reason as the claim: a batch of
 * completions costs more to plan than to run.
 *
 * Parameters, one element per lease: $1 task ids, $2 attempts and $3 owners
 * (1-based positions in $4), each comma-separated (`"41,42,57"`); $4 the
 * distinct owners (a worker's batch has one); $5 the results as one JSON
 * array. Answers the 1-based positions of the leases recorded, in one
 * array: a position missing from it was a lost lease. Callers list each
 * lease once. One text per column and each owner once: the client sends
 * about a third of the bytes a text array per column took, and Postgres
 * parses one JSON value instead of one per result.
 *
 * Each row is written only if it still holds that lease (fenced): its
 * attempt and owner match, and an owner is set only while a task runs (the
 * constraint `tasks_lease_owner_while_running`). Leaving the status out of
 * the condition keeps the plan on the primary key: with it, a partial index
 * of running tasks could serve the join, and under statistics that counted
 * few running tasks Postgres chose one, scanning every running task for
 * each batch.
 *
 * `complete_tasks` (migration 4), one text array per column, stays for
 * workers of earlier releases during a rolling deploy.
 *
 * `<schema>.delete_batch` (migration 8) takes the same first four
 * parameters and deletes the tasks instead (a worker with `retention: 0`):
 * a DELETE writes no new row version and no index entry, where keeping a
 * task writes both, and Postgres spends about half as much on it.
 */

/** The function's body query, with its parameters as `$1`…`$5`; also what the plan test explains. */
export const query = (schema: string): string => `
  WITH recorded AS (
    UPDATE ${schema}.tasks t SET status = 'succeeded', result = b.result, lease_owner = NULL,
      lease_expires_at = NULL, finished_at = now(), updated_at = now()
    FROM unnest(
      string_to_array($1::text, ',')::bigint[],
      string_to_array($2::text, ',')::int[],
      string_to_array($3::text, ',')::int[],
      ARRAY(SELECT r.value FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS r(value, n) ORDER BY r.n)
    ) WITH ORDINALITY AS b(id, attempt, owner, result, position)
    WHERE t.id = b.id AND t.attempt = b.attempt AND t.lease_owner = ($4::text[])[b.owner]
    RETURNING b.position
  )
  SELECT coalesce(array_agg(position::int), '{}') FROM recorded`

/** `delete_batch`'s body query, with its parameters as `$1`…`$4` (`query`'s first four): the same fenced join, deleting. */
export const deleteQuery = (schema: string): string => `
  WITH recorded AS (
    DELETE FROM ${schema}.tasks t
    USING unnest(
      string_to_array($1::text, ',')::bigint[],
      string_to_array($2::text, ',')::int[],
      string_to_array($3::text, ',')::int[]
    ) WITH ORDINALITY AS b(id, attempt, owner, position)
    WHERE t.id = b.id AND t.attempt = b.attempt AND t.lease_owner = ($4::text[])[b.owner]
    RETURNING b.position
  )
  SELECT coalesce(array_agg(position::int), '{}') FROM recorded`

/** `complete_tasks`' body query (migration 4): one text array per column, an owner per lease. */
const legacyQuery = (schema: string): string => `
  WITH recorded AS (
    UPDATE ${schema}.tasks t SET status = 'succeeded', result = b.result::jsonb, lease_owner = NULL,
      lease_expires_at = NULL, finished_at = now(), updated_at = now()
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[]) WITH ORDINALITY AS b(id, attempt, owner, result, position)
    WHERE t.id = b.id AND t.attempt = b.attempt AND t.lease_owner = b.owner
    RETURNING b.position
  )
  SELECT coalesce(array_agg(position::int), '{}') FROM recorded`

const completeFunction = (schema: string, name: string, parameters: string, body: string): string => `
  CREATE FUNCTION ${schema}.${name}(${parameters})
  RETURNS integer[]
  LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  AS $${name}$
  DECLARE
    positions integer[];
  BEGIN
    ${body} INTO positions;
    RETURN positions;
  END
  $${name}$`

/** The statement that creates `complete_tasks` (migration 4). */
export const createFunction = (schema: string): string =>
  completeFunction(schema, "complete_tasks", "bigint[], integer[], text[], text[]", legacyQuery(schema))

/** The statement that creates `complete_batch` (migration 7). */
export const createBatchFunction = (schema: string): string =>
  completeFunction(schema, "complete_batch", "text, text, text, text[], jsonb", query(schema))

/** The statement that creates `delete_batch` (migration 8). */
export const createDeleteFunction = (schema: string): string =>
  completeFunction(schema, "delete_batch", "text, text, text, text[]", deleteQuery(schema))
