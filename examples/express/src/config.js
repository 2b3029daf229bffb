// @ts-check
// The app's configuration, from the environment. MAGICAUTH_APP_KEY and
// MAGICAUTH_BASE_URL are read by `new Client()` itself.

import { randomBytes } from 'node:crypto'

/**
 * @typedef {object} Config
 * @property {URL} appUrl
 * @property {Buffer} sessionSecret
 * @property {string} host
 * @property {number} port
 */

/**
 * @param {NodeJS.ProcessEnv} env
 * @param {Pick<Console, 'warn'>} [log]
 * @returns {Config}
 */
export function configFromEnv(env, log = console) {
  const appUrl = new URL(env.APP_URL || 'http://localhost:3000')
  const local = ['localhost', '127.0.0.1', '[::1]'].includes(appUrl.hostname)
  if (!(appUrl.protocol === 'https:' || (appUrl.protocol === 'http:' && local))) {
    throw new Error('APP_URL must be https (or http for localhost)')
  }
  let sessionSecret
  if (env.SESSION_SECRET) {
    sessionSecret = Buffer.from(env.SESSION_SECRET)
    if (sessionSecret.length < 32) throw new Error('SESSION_SECRET must be at least 32 bytes (openssl rand -base64 32)')
  } else {
    log.warn('SESSION_SECRET is not set: using a random one, so every restart signs everyone out')
    sessionSecret = randomBytes(32)
  }
  const port = Number(env.PORT || 3000)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('PORT must be a port number')
  return { appUrl, sessionSecret, host: env.HOST || '127.0.0.1', port }
}
