/**
 * How many claimed tasks a worker keeps waiting in memory for a free slot.
 *
 * Claiming ahead turns many small claims into few large ones, which is what
 * short tasks need; but a task waiting in one worker's buffer is a task no
 * other worker can start. So the buffer holds about `holdMillis` of work at
 * the rate the worker's handlers finish: none until a handler has finished
 * (the rate is unknown), a few for tasks of a second, up to `max` for tasks
 * of a millisecond. The rate is a moving average of handler run times.
 */

/** Work a full buffer holds, in milliseconds of the current handler run time. */
export const holdMillis = 100

/** Weight of the newest run time in the moving average. */
const weight = 0.1

export interface Prefetch {
  /** A handler ran for `millis`. */
  readonly ran: (millis: number) => void
  /** Tasks to keep claimed ahead of the free slots now, `0` to `max`. */
  readonly target: () => number
  /** Forgets the rate: nothing is claimed ahead until a handler finishes again. */
  readonly reset: () => void
}

export const make = (concurrency: number, max: number): Prefetch => {
  /** Moving average of handler run times in ms; undefined until one finished. */
  let average: number | undefined
  return {
    ran: (millis) => {
      average = average === undefined ? millis : average + weight * (millis - average)
    },
    reset: () => {
      average = undefined
    },
    target: () => {
      if (max === 0 || average === undefined) return 0
      // A clock in whole milliseconds reads 0 for the shortest handlers.
      return Math.min(max, Math.floor((concurrency * holdMillis) / Math.max(average, 0.1)))
    }
  }
}
