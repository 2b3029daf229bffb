// @ts-check
// End to end: the real MagicAuth server and SMTP sink (the test bed), this
// example on a loopback port, and `fetch` acting as the browser, with
// redirects and cookies handled by hand so every step can be checked.

import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { after, afterEach, test } from 'node:test'

import { Client } from 'magicauth'

import { Testbed } from '../../../bindings-node/test/support/testbed.mjs'
import { createApp } from '../src/app.js'

const SECRET = Buffer.alloc(32, 7)

/** @typedef {{status: number, headers: Headers, body: string}} Page */

/** A browser: one cookie jar, no automatic redirects. */
class Browser {
  /** @type {Map<string, string>} */
  cookies = new Map()

  /** @param {string} base */
  constructor(base) {
    this.base = base
  }

  /**
   * @param {string} path
   * @param {{method?: string, form?: Record<string, string>, headers?: Record<string, string>}} [options]
   * @returns {Promise<Page>}
   */
  async request(path, { method = 'GET', form, headers = {} } = {}) {
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
    const response = await fetch(new URL(path, this.base), {
      method,
      redirect: 'manual',
      headers: {
        ...(cookie ? { cookie } : {}),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...headers,
      },
      body: form ? new URLSearchParams(form).toString() : undefined,
      signal: AbortSignal.timeout(30_000),
    })
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';')
      const [name, ...rest] = pair.split('=')
      const value = rest.join('=')
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    const page = { status: response.status, headers: response.headers, body: await response.text() }
    assertNoInternals(page)
    return page
  }

  /** @param {string} path @param {Record<string, string>} form */
  post(path, form) {
    return this.request(path, { method: 'POST', form })
  }
}

/** @param {Page} page */
function assertNoInternals(page) {
  for (const leak of ['    at ', 'Error:', 'TOKEN_USED', 'TOKEN_EXPIRED', 'INVALID_TOKEN', 'HTTP 4', 'mk_', 'node_modules']) {
    assert.ok(!page.body.includes(leak), `the page shows ${JSON.stringify(leak)}:\n${page.body}`)
  }
}

/** @param {string} body */
const hiddenToken = (body) => /name="magic_token" value="([^"]+)"/.exec(body)?.[1]

/** @type {(() => Promise<void>)[]} */
const cleanups = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})
after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/**
 * The example on a loopback port, wired to a fresh test bed.
 * @param {{appArgs?: string[], baseUrl?: string}} [options]
 */
async function startApp({ appArgs = [], baseUrl } = {}) {
  const testbed = await Testbed.start()
  cleanups.push(() => testbed.close())
  // Listen first: the MagicAuth app's allowed redirect URL needs the port.
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)))
  cleanups.push(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(() => resolve(undefined)))
  })
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address())
  const url = `http://127.0.0.1:${port}`
  const { app_key: appKey } = await testbed.createApp('--name', 'Express example', '--redirect-url', `${url}/auth/callback`, ...appArgs)
  /** @type {string[]} */
  const logged = []
  const log = { info: () => {}, error: (/** @type {unknown[]} */ ...args) => void logged.push(args.join(' ')) }
  const magicauth = new Client({ appKey, baseUrl: baseUrl ?? testbed.baseUrl })
  server.on('request', createApp({ magicauth, appUrl: new URL(url), sessionSecret: SECRET, log }))
  return { testbed, url, browser: new Browser(url), logged }
}

test('sign in: form, email, scanner-safe callback, dashboard, sign out', async () => {
  const { testbed, url, browser } = await startApp()

  const form = await browser.request('/')
  assert.equal(form.status, 200)
  assert.match(form.body, /<form method="post" action="\/send-link">/)

  const sent = await browser.post('/send-link', { email: 'Ada@Example.com' })
  assert.equal(sent.status, 200)
  assert.match(sent.body, /Check your email/)
  assert.match(sent.body, /within 15 minutes/)

  const mail = await testbed.mail('ada@example.com')
  assert.ok(mail.link && mail.token)
  assert.ok(mail.link.startsWith(`${url}/auth/callback?magic_token=`), mail.link)
  const link = new URL(mail.link)

  // A scanner (or the person) opening the link twice uses nothing up.
  for (let i = 0; i < 2; i++) {
    const page = await browser.request(link.pathname + link.search)
    assert.equal(page.status, 200)
    assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
    assert.equal(page.headers.get('cache-control'), 'no-store')
    assert.match(page.body, /<button type="submit" autofocus>Continue<\/button>/)
    assert.equal(hiddenToken(page.body), mail.token)
  }
  assert.equal(browser.cookies.size, 0, 'GET sets no cookie')

  const signedIn = await browser.post('/auth/callback', { magic_token: mail.token })
  assert.equal(signedIn.status, 303)
  assert.equal(signedIn.headers.get('location'), '/dashboard')
  assert.equal(signedIn.headers.get('referrer-policy'), 'no-referrer')
  assert.equal(signedIn.headers.get('cache-control'), 'no-store')
  const setCookie = signedIn.headers.getSetCookie().find((c) => c.startsWith('session='))
  assert.ok(setCookie)
  assert.match(setCookie, /HttpOnly/)
  assert.match(setCookie, /SameSite=Lax/)
  assert.doesNotMatch(setCookie, /Secure/, 'plain http on loopback')

  const dashboard = await browser.request('/dashboard')
  assert.equal(dashboard.status, 200)
  assert.match(dashboard.body, /signed in as <strong>ada@example\.com<\/strong>/)
  assert.equal(dashboard.headers.get('cache-control'), 'no-store')

  // The same link again: used, and the page offers a new one.
  const reused = await browser.post('/auth/callback', { magic_token: mail.token })
  assert.equal(reused.status, 410)
  assert.match(reused.body, /already been used/)
  assert.match(reused.body, /action="\/send-link"/)

  // Each sign-in gets a new session id.
  const firstSession = browser.cookies.get('session')
  await browser.post('/send-link', { email: 'ada@example.com' })
  const second = await testbed.mail('ada@example.com', 2)
  assert.equal((await browser.post('/auth/callback', { magic_token: /** @type {string} */ (second.token) })).status, 303)
  assert.notEqual(browser.cookies.get('session'), firstSession)

  const out = await browser.post('/logout', {})
  assert.equal(out.status, 303)
  assert.equal(out.headers.get('location'), '/')
  assert.equal(browser.cookies.has('session'), false)
  assert.match((await browser.request('/')).body, /You have signed out/)
  const gone = await browser.request('/dashboard')
  assert.equal(gone.status, 303)
  assert.match((await browser.request('/')).body, /Please sign in to see that page/)
})

test('an expired link gets a page offering a new one', async () => {
  const { testbed, browser } = await startApp({ appArgs: ['--token-ttl', '5m'] })
  await browser.post('/send-link', { email: 'late@example.com' })
  const mail = await testbed.mail('late@example.com')
  await testbed.advanceClock(301)
  const page = await browser.post('/auth/callback', { magic_token: /** @type {string} */ (mail.token) })
  assert.equal(page.status, 410)
  assert.match(page.body, /This link has expired/)
  assert.match(page.body, /Send me a new link/)
  assert.equal(page.headers.get('referrer-policy'), 'no-referrer')
  assert.equal(browser.cookies.has('session'), false)
})

test('invalid and incomplete links, bad addresses, rate limits are explained', async () => {
  const { browser } = await startApp()

  const invalid = await browser.post('/auth/callback', { magic_token: 'not-a-real-token' })
  assert.equal(invalid.status, 400)
  assert.match(invalid.body, /This link is not valid/)

  const incomplete = await browser.request('/auth/callback')
  assert.equal(incomplete.status, 400)
  assert.match(incomplete.body, /This link is incomplete/)
  assert.equal(incomplete.headers.get('cache-control'), 'no-store')
  assert.equal((await browser.post('/auth/callback', {})).status, 400)

  const notEmail = await browser.post('/send-link', { email: 'not-an-email' })
  assert.equal(notEmail.status, 400)
  assert.match(notEmail.body, /does not look like an email address/)
  assert.match(notEmail.body, /value="not-an-email"/)

  const empty = await browser.post('/send-link', { email: '  ' })
  assert.equal(empty.status, 400)

  // Five links per address per 15 minutes.
  for (let i = 0; i < 5; i++) assert.equal((await browser.post('/send-link', { email: 'five@example.com' })).status, 200)
  const limited = await browser.post('/send-link', { email: 'five@example.com' })
  assert.equal(limited.status, 429)
  assert.match(limited.body, /Too many sign-in links were requested\. Please try again in \d+ (second|minute)s?\./)
  assert.ok(Number(limited.headers.get('retry-after')) > 0)

  // Escaped, not executed.
  const evil = await browser.post('/send-link', { email: '"><script>alert(1)</script>' })
  assert.equal(evil.status, 400)
  assert.ok(!evil.body.includes('<script>alert(1)'))
})

test('MagicAuth unreachable: a plain message for the person, the details in the log', async () => {
  const { browser, logged } = await startApp({ baseUrl: 'http://127.0.0.1:9/api' })
  const page = await browser.post('/send-link', { email: 'a@example.com' })
  assert.equal(page.status, 503)
  assert.match(page.body, /could not send a sign-in link just now/)
  const verify = await browser.post('/auth/callback', { magic_token: 'whatever' })
  assert.equal(verify.status, 503)
  assert.match(verify.body, /could not sign you in/)
  assert.ok(logged.some((line) => line.includes('CONNECTION')), logged.join('\n'))
})

test('forged, foreign and cross-site requests are refused', async () => {
  const { browser } = await startApp()
  browser.cookies.set('session', encodeURIComponent('s:{"userId":1,"email":"mallory@example.com","expiresAt":9999999999,"id":"x"}.forged'))
  const forged = await browser.request('/dashboard')
  assert.equal(forged.status, 303)
  assert.equal(browser.cookies.has('session'), false)
  assert.match((await browser.request('/')).body, /Your session has ended/)

  const crossSite = await browser.request('/auth/callback', {
    method: 'POST',
    form: { magic_token: 'attacker-token' },
    headers: { 'sec-fetch-site': 'cross-site' },
  })
  assert.equal(crossSite.status, 403)

  const missing = await browser.request('/nowhere')
  assert.equal(missing.status, 404)

  const tooBig = await browser.post('/send-link', { email: 'x'.repeat(10_000) })
  assert.equal(tooBig.status, 413)
})
