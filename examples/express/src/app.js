// @ts-check
// The Express app: routes that map MagicAuth's outcomes to pages a person can
// act on. Error details go to the log, never to the browser.

import cookieParser from 'cookie-parser'
import express from 'express'
import {
  Client,
  InvalidRequestError,
  InvalidTokenError,
  MagicAuthError,
  RateLimitError,
  TokenAlreadyUsedError,
  TokenExpiredError,
} from 'magicauth'

import * as pages from './pages.js'
import { SESSION_COOKIE, cookieOptions, newSessionId, openSession } from './session.js'

const FLASH_COOKIE = 'flash'
/** Long enough to survive the redirect, short enough not to linger. */
const FLASH_MAX_AGE_SECONDS = 60

/**
 * One-time messages carried across a redirect in a cookie. The cookie holds a
 * fixed code, never text, so nobody can make the page say something else.
 * @type {Record<string, pages.Notice>}
 */
const FLASHES = {
  signed_out: { kind: 'info', text: 'You have signed out.' },
  sign_in_required: { kind: 'info', text: 'Please sign in to see that page.' },
  session_ended: { kind: 'problem', text: 'Your session has ended. Please sign in again.' },
}

/**
 * @typedef {object} AppOptions
 * @property {Client} magicauth The MagicAuth client (one per process).
 * @property {URL} appUrl This app's public origin; links lead to `${appUrl}/auth/callback`.
 * @property {Buffer} sessionSecret Signs the session cookie; at least 32 bytes.
 * @property {Pick<Console, 'info' | 'error'>} [log]
 */

/** @param {AppOptions} options */
export function createApp({ magicauth, appUrl, sessionSecret, log = console }) {
  if (sessionSecret.length < 32) throw new Error('the session secret must be at least 32 bytes')
  const callbackUrl = new URL('/auth/callback', appUrl).href
  const secure = appUrl.protocol === 'https:'
  const now = () => Math.floor(Date.now() / 1000)

  const app = express()
  app.disable('x-powered-by')
  app.use(cookieParser(sessionSecret.toString('base64')))
  app.use(express.urlencoded({ extended: false, limit: '4kb' }))

  // Login CSRF: a form posted from another site could sign the visitor in to
  // the attacker's account with the attacker's token. Browsers say where a
  // request comes from; refuse cross-site POSTs.
  app.use((req, res, next) => {
    if (req.method === 'POST' && req.get('sec-fetch-site') === 'cross-site') {
      res.status(403).type('html').send(pages.problem('Request refused', 'Forms of this site can only be sent from this site.'))
      return
    }
    next()
  })

  /** @param {import('express').Request} req */
  const currentSession = (req) => openSession(req.signedCookies?.[SESSION_COOKIE], now())

  /** @param {import('express').Response} res @param {keyof typeof FLASHES} flash */
  const redirectWithFlash = (res, flash) => {
    res.cookie(FLASH_COOKIE, flash, cookieOptions(secure, FLASH_MAX_AGE_SECONDS))
    res.redirect(303, '/')
  }

  /** Pages whose URL or form carries a token: no `Referer` to other sites, no copy in any cache. @param {import('express').Response} res */
  const keepTokenPrivate = (res) => res.set({ 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-store' })

  app.get('/', (req, res) => {
    const flash = req.cookies?.[FLASH_COOKIE]
    const notice = typeof flash === 'string' && Object.hasOwn(FLASHES, flash) ? FLASHES[flash] : undefined
    if (flash !== undefined) res.clearCookie(FLASH_COOKIE, cookieOptions(secure, 0)) // shown once
    res.type('html').send(pages.signIn({ notice, signedInAs: currentSession(req)?.email }))
  })

  app.post('/send-link', async (req, res) => {
    const email = typeof req.body?.email === 'string' ? req.body.email.trim() : ''
    /** @param {number} status @param {string} text */
    const formProblem = (status, text) =>
      res.status(status).type('html').send(pages.signIn({ notice: { kind: 'problem', text }, email }))
    if (!email) return formProblem(400, 'Please enter your email address.')
    try {
      // MagicAuth answers alike for known and unknown addresses (the user is
      // created on first sign-in), so this page cannot reveal who has an account.
      const sent = await magicauth.sendLink(email, callbackUrl)
      res.type('html').send(pages.checkEmail(email, sent.expiresIn))
    } catch (error) {
      // `INVALID_REQUEST` is about the address: the callback URL is this app's own.
      if (error instanceof InvalidRequestError && error.code === 'INVALID_REQUEST') {
        return formProblem(400, 'That does not look like an email address. Please check it and try again.')
      }
      if (error instanceof RateLimitError) {
        const wait = error.retryAfter === undefined ? 'a few minutes' : pages.describeDuration(error.retryAfter)
        if (error.retryAfter !== undefined) res.set('Retry-After', String(Math.ceil(error.retryAfter)))
        return formProblem(429, `Too many sign-in links were requested. Please try again in ${wait}.`)
      }
      // The key, a wrong base URL or MagicAuth being down: the operator's
      // problem, logged for them; the person gets a plain message.
      logFailure(log, 'sendLink', error)
      return formProblem(503, 'We could not send a sign-in link just now. Please try again in a moment.')
    }
  })

  // GET verifies nothing. Mail security scanners (Outlook Safe Links,
  // Mimecast, …) fetch links to inspect them; verifying here would let them
  // use up the single-use token before the person clicks.
  app.get('/auth/callback', (req, res) => {
    keepTokenPrivate(res)
    const token = Client.tokenFromUrl(req.originalUrl)
    if (!token) return void incompleteLink(res)
    res.type('html').send(pages.continueSignIn(token))
  })

  // The person pressed Continue: the only place that verifies.
  app.post('/auth/callback', async (req, res) => {
    keepTokenPrivate(res)
    const token = typeof req.body?.magic_token === 'string' ? req.body.magic_token.trim() : ''
    if (!token) return void incompleteLink(res)
    let verification
    try {
      verification = await magicauth.verifyToken(token)
    } catch (error) {
      return void verifyFailed(res, error)
    }
    // The API call above is the proof; this checks the session JWT offline
    // (signature, issuer, audience, lifetime), and the app's session lasts as long as it.
    let claims
    try {
      claims = await magicauth.verifySession(verification.token)
    } catch (error) {
      logFailure(log, 'verifySession', error)
      return void signInUnavailable(res)
    }
    if (claims.sub !== String(verification.user.id)) {
      log.error(`session JWT names another user than ${verification.user.id}`)
      return void signInUnavailable(res)
    }
    const session = { userId: verification.user.id, email: verification.user.email, expiresAt: claims.exp, id: newSessionId() }
    log.info(`signed in: user ${session.userId}`)
    res.cookie(SESSION_COOKIE, JSON.stringify(session), { ...cookieOptions(secure, session.expiresAt - now()), signed: true })
    res.redirect(303, '/dashboard')
  })

  app.get('/dashboard', (req, res) => {
    const session = currentSession(req)
    if (session) {
      res.set('Cache-Control', 'no-store').type('html').send(pages.dashboard(session))
    } else if (req.cookies?.[SESSION_COOKIE] !== undefined || req.signedCookies?.[SESSION_COOKIE] !== undefined) {
      // Expired, or not signed by us: drop it.
      res.clearCookie(SESSION_COOKIE, cookieOptions(secure, 0))
      redirectWithFlash(res, 'session_ended')
    } else {
      redirectWithFlash(res, 'sign_in_required')
    }
  })

  app.post('/logout', (_req, res) => {
    res.clearCookie(SESSION_COOKIE, cookieOptions(secure, 0))
    redirectWithFlash(res, 'signed_out')
  })

  app.use((_req, res) => {
    res.status(404).type('html').send(pages.problem('Page not found', 'There is nothing at this address.'))
  })

  // Anything unexpected: logged, and a plain page (Express's default handler
  // would show the stack trace outside production).
  /** @type {import('express').ErrorRequestHandler} */
  const lastResort = (error, _req, res, _next) => {
    const status = typeof error?.status === 'number' && error.status >= 400 && error.status < 500 ? error.status : 500
    if (status === 500) logFailure(log, 'request', error)
    if (res.headersSent) return void res.end()
    res.status(status).type('html').send(pages.problem('Something went wrong', 'Please go back and try again.'))
  }
  app.use(lastResort)

  /** The page for a token MagicAuth refused. @param {import('express').Response} res @param {unknown} error */
  function verifyFailed(res, error) {
    // Expired and used links are gone for good (410); anything else about the token is a bad request (400).
    if (error instanceof TokenExpiredError) {
      return linkProblem(res, 410, 'This link has expired', 'Sign-in links work for a short time only, and this one is too old.')
    }
    if (error instanceof TokenAlreadyUsedError) {
      return linkProblem(
        res,
        410,
        'This link has already been used',
        'Each sign-in link works once. If you already signed in with it, you may still be signed in.',
      )
    }
    if (error instanceof InvalidTokenError) {
      return linkProblem(
        res,
        400,
        'This link is not valid',
        'The link may have been cut short when it was copied. Links also only work for the site that sent them.',
      )
    }
    logFailure(log, 'verifyToken', error)
    signInUnavailable(res)
  }

  return app
}

/** @param {import('express').Response} res @param {number} status @param {string} title @param {string} explanation */
function linkProblem(res, status, title, explanation) {
  res.status(status).type('html').send(pages.linkProblem(title, explanation))
}

/** @param {import('express').Response} res */
function incompleteLink(res) {
  linkProblem(res, 400, 'This link is incomplete', 'The sign-in link has no token. It may have been cut short when it was copied.')
}

/** @param {import('express').Response} res */
function signInUnavailable(res) {
  linkProblem(
    res,
    503,
    'We could not sign you in',
    'Something went wrong on our side. If your link no longer works, ask for a new one below.',
  )
}

/**
 * Logs a failure for the operator: the MagicAuth code and message (which
 * never hold the app key or the token), or the stack of anything else.
 * @param {Pick<Console, 'error'>} log @param {string} what @param {unknown} error
 */
function logFailure(log, what, error) {
  if (error instanceof MagicAuthError) {
    log.error(`${what} failed: ${error.code}${error.status ? ` (HTTP ${error.status})` : ''}: ${error.message}`)
  } else {
    log.error(`${what} failed:`, error)
  }
}
