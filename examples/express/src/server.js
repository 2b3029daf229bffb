// @ts-check
// Serves the example: `node src/server.js` (see README.md for the environment).

import { Client } from 'magicauth'

import { createApp } from './app.js'
import { configFromEnv } from './config.js'

const config = configFromEnv(process.env)
// Reads MAGICAUTH_APP_KEY and MAGICAUTH_BASE_URL; one client (one connection pool) for the process.
const magicauth = new Client()
const app = createApp({ magicauth, appUrl: config.appUrl, sessionSecret: config.sessionSecret })

const server = app.listen(config.port, config.host, () => {
  console.info(`listening on http://${config.host}:${config.port} (public URL ${config.appUrl.origin})`)
})
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.once(signal, () => server.close())
}
