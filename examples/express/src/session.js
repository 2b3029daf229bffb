// @ts-check
// The app's own session: a signed cookie (Express's `res.cookie(…, {signed:
// true})`, checked by cookie-parser with HMAC-SHA256 in constant time) holding
// who signed in and until when. MagicAuth proves the user owns the address
// once; from then on the app keeps its own session.

import { randomBytes } from 'node:crypto'

export const SESSION_COOKIE = 'session'

/**
 * A signed-in user, as stored in the session cookie.
 * @typedef {object} Session
 * @property {number} userId MagicAuth's user id.
 * @property {string} email
 * @property {number} expiresAt Unix seconds: the MagicAuth session JWT's `exp`.
 * @property {string} id Fresh at every sign-in, so no cookie from before sign-in is ever reused
 *   (session fixation), and a key for server-side revocation if one is added.
 */

/** A new random session id. */
export function newSessionId() {
  return randomBytes(16).toString('base64url')
}

/**
 * The session in a signed cookie's value (already checked by cookie-parser),
 * if it is well-formed and not expired at `now` (Unix seconds).
 * @param {unknown} value
 * @param {number} now
 * @returns {Session | null}
 */
export function openSession(value, now) {
  if (typeof value !== 'string') return null
  let parsed
  try {
    parsed = JSON.parse(value)
  } catch {
    return null
  }
  if (
    parsed === null ||
    typeof parsed !== 'object' ||
    !Number.isInteger(parsed.userId) ||
    typeof parsed.email !== 'string' ||
    !Number.isInteger(parsed.expiresAt) ||
    typeof parsed.id !== 'string'
  ) {
    return null
  }
  const session = /** @type {Session} */ ({ userId: parsed.userId, email: parsed.email, expiresAt: parsed.expiresAt, id: parsed.id })
  return session.expiresAt > now ? session : null
}

/**
 * Attributes every cookie of this app gets: `HttpOnly` keeps it away from
 * scripts, `SameSite=Lax` off cross-site POSTs, `Secure` over https.
 * @param {boolean} secure
 * @param {number} maxAgeSeconds
 * @returns {import('express').CookieOptions}
 */
export function cookieOptions(secure, maxAgeSeconds) {
  return { httpOnly: true, sameSite: 'lax', secure, path: '/', maxAge: Math.max(0, maxAgeSeconds) * 1000 }
}
