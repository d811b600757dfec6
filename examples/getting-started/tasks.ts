/**
 * Getting started (docs/getting-started.md), step 1: a task and the registry
 * a worker runs. In your project, import from "hyrex".
 *
 *   hyrex worker examples/getting-started/tasks.ts
 */
import { Effect, Schema } from "effect"
import { Registry, Task } from "../../src/index.js"

export const sendWelcomeEmail = Task.make("send_welcome_email", {
  payload: Schema.Struct({ userId: Schema.String, email: Schema.String }),
  queue: "emails",
  maxRetries: 5,
  timeout: "30 seconds",
  handler: ({ email, userId }) => Effect.logInfo(`welcome mail to ${email} (user ${userId})`)
})

export const registry = Registry.make(sendWelcomeEmail)
