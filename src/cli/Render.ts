/**
 * Text output of the CLI: tables, ages, progress bars, colours (only on a
 * terminal, never with `NO_COLOR`), and a screen that redraws in place.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

const isTty = process.stdout.isTTY === true

/** Whether output is coloured. */
export const colors = isTty && (process.env["NO_COLOR"] ?? "") === "" && process.env["TERM"] !== "dumb"

const paint = (code: string) => (text: string): string => colors ? `\u001b[${code}m${text}\u001b[0m` : text

export const bold = paint("1")
export const dim = paint("2")
export const red = paint("31")
export const green = paint("32")
export const yellow = paint("33")
export const cyan = paint("36")

const escape = /\u001b\[[0-9;?]*[A-Za-z]/g

/** Length as seen on screen (escape sequences take no room). */
export const visibleLength = (text: string): number => text.replace(escape, "").length

/** Cuts a line to `width` visible characters, keeping escape sequences intact. */
export const truncate = (text: string, width: number): string => {
  if (visibleLength(text) <= width) return text
  let out = ""
  let seen = 0
  for (let i = 0; i < text.length && seen < width;) {
    const match = text[i] === "\u001b" ? /^\u001b\[[0-9;?]*[A-Za-z]/.exec(text.slice(i)) : null
    if (match !== null) {
      out += match[0]
      i += match[0].length
    } else {
      out += text[i]
      i += 1
      seen += 1
    }
  }
  return colors ? `${out}\u001b[0m` : out
}

const pad = (text: string, width: number, align: "left" | "right") => {
  const fill = " ".repeat(Math.max(0, width - visibleLength(text)))
  return align === "left" ? text + fill : fill + text
}

/** A table as lines: a bold header row, columns two spaces apart. Columns whose header ends with ">" align right. */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): Array<string> => {
  const names = headers.map((header) => header.replace(/>$/, ""))
  const aligns = headers.map((header) => header.endsWith(">") ? "right" as const : "left" as const)
  const widths = names.map((name, column) => Math.max(name.length, ...rows.map((row) => visibleLength(row[column] ?? ""))))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, column) => pad(cell, widths[column]!, aligns[column]!)).join("  ").trimEnd()
  return [bold(line(names)), ...rows.map(line)]
}

/** `0.4s`, `12s`, `3m 20s`, `2h 5m`, `3d 4h`. */
export const duration = (millis: number): string => {
  const ms = Math.max(0, millis)
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`
  const s = Math.round(ms / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`
}

/** `3.2s ago` / `in 4.0s`. */
export const relative = (millis: number): string => millis >= 0 ? `${duration(millis)} ago` : `in ${duration(-millis)}`

/** A timestamp with its age relative to `now`. */
export const timestamp = (date: Date | null, now: Date): string =>
  date === null ? "-" : `${date.toISOString()} (${relative(now.getTime() - date.getTime())})`

/** `[████████░░░░]` */
export const bar = (fraction: number, width: number): string => {
  const clamped = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0))
  const full = Math.round(clamped * width)
  return `[${green("█".repeat(full))}${dim("░".repeat(width - full))}]`
}

/** Shortens text to `width` characters with an ellipsis. */
export const ellipsis = (text: string, width: number): string =>
  text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`

/** A region of the terminal that is redrawn in place. */
export interface Screen {
  /** Whether frames redraw in place (stdout is a terminal); otherwise each frame is printed after the last. */
  readonly live: boolean
  readonly draw: (lines: ReadonlyArray<string>) => Effect.Effect<void>
}

/**
 * A screen on stdout. On a terminal it hides the cursor, draws every frame
 * from the top-left corner (clearing what the last frame left) and shows
 * the cursor again when its scope closes; elsewhere frames are printed one
 * after another, separated by a blank line.
 */
export const screen: Effect.Effect<Screen, never, Scope.Scope> = Effect.gen(function*() {
  const out = process.stdout
  if (!isTty) {
    return {
      live: false,
      draw: (lines) => Effect.sync(() => void out.write(`${lines.join("\n")}\n\n`))
    }
  }
  let first = true
  yield* Effect.addFinalizer(() => Effect.sync(() => void out.write("\u001b[?25h")))
  return {
    live: true,
    draw: (lines) =>
      Effect.sync(() => {
        const width = Math.max(20, out.columns ?? 100)
        const height = Math.max(5, out.rows ?? 40)
        const visible = lines.slice(0, height - 1).map((line) => `${truncate(line, width)}\u001b[K`)
        const prefix = first ? "\u001b[?25l\u001b[2J\u001b[H" : "\u001b[H"
        first = false
        out.write(`${prefix}${visible.join("\n")}\n\u001b[J`)
      })
  }
})

/** Multi-line text (an error message) on one line. */
export const oneLineText = (text: string): string => text.replace(/\s+/g, " ").trim()
