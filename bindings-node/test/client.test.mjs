// The client against the real server (the test bed, with its SMTP sink):
// results and their types, concurrency on one client, configuration from the
// environment, and that the key never shows.

import assert from 'node:assert/strict'
import { inspect } from 'node:util'
import { after, before, test } from 'node:test'

import { Client, TokenAlreadyUsedError, VERSION, tokenFromUrl } from 'magicauth'

import { Stub } from './support/stub.mjs'
import { Testbed } from './support/testbed.mjs'

/** @type {Testbed} */
let testbed
/** @type {{app_id: string, app_key: string}} */
let app

before(async () => {
  testbed = await Testbed.start()
  app = await testbed.createApp('--name', 'Node SDK', '--burst', '1000')
})
after(async () => {
  await testbed?.close()
})

const client = () => new Client({ appKey: app.app_key, baseUrl: testbed.baseUrl })

/** Sends a link to `email` and resolves to the token of the email that arrives. @param {Client} c @param {string} email */
async function tokenFor(c, email) {
  await c.sendLink(email)
  const mail = await testbed.mail(email)
  assert.ok(mail.token && mail.link)
  return mail
}

test('a round trip: plain objects, Dates, a session that checks out', async () => {
  const c = client()
  const sent = await c.sendLink('Ada@Example.com', 'https://app.example.com/auth/callback')
  assert.deepEqual(sent, { expiresIn: 900 })
  const mail = await testbed.mail('ada@example.com')
  assert.equal(c.tokenFromUrl(/** @type {string} */ (mail.link)), mail.token)
  assert.equal(Client.tokenFromUrl(/** @type {string} */ (mail.link)), mail.token)
  assert.equal(tokenFromUrl(/** @type {string} */ (mail.link)), mail.token)

  const before = Date.now()
  const verification = await c.verifyToken(/** @type {string} */ (mail.token))
  assert.deepEqual(Object.keys(verification).sort(), ['redirectUrl', 'token', 'user'])
  assert.equal(Object.getPrototypeOf(verification), Object.prototype)
  const { user } = verification
  assert.deepEqual(Object.keys(user).sort(), ['email', 'emailVerifiedAt', 'id', 'lastLoginAt', 'name'])
  assert.ok(Number.isInteger(user.id) && user.id > 0)
  assert.equal(user.email, 'ada@example.com')
  assert.equal(user.name, null)
  assert.ok(user.emailVerifiedAt instanceof Date)
  assert.ok(user.lastLoginAt instanceof Date)
  // The server's clock is this machine's: the sign-in happened just now (whole seconds).
  assert.ok(Math.abs(user.lastLoginAt.getTime() - before) < 60_000, user.lastLoginAt.toISOString())
  assert.equal(verification.redirectUrl, 'https://app.example.com/auth/callback')

  // The session token is a credential: kept out of inspect (console.log), as Python's repr does; JSON keeps it.
  for (const shown of [inspect(verification), inspect(verification, { showHidden: true, depth: null })]) {
    assert.ok(!shown.includes(verification.token), shown)
    assert.match(shown, /token: '\*\*\*'/)
    assert.match(shown, /ada@example\.com/)
  }
  assert.equal(JSON.parse(JSON.stringify(verification)).token, verification.token)

  const claims = await c.verifySession(verification.token)
  assert.deepEqual(Object.keys(claims).sort(), ['aud', 'email', 'exp', 'iat', 'iss', 'jti', 'sub'])
  assert.equal(claims.sub, String(user.id))
  assert.equal(claims.aud, app.app_id)
  assert.equal(claims.iss, testbed.serverUrl)
  assert.ok(Number.isInteger(claims.exp) && claims.exp > claims.iat)

  await assert.rejects(c.verifyToken(/** @type {string} */ (mail.token)), TokenAlreadyUsedError)
})

test('200 concurrent calls on one client', async () => {
  const c = client()
  const emails = Array.from({ length: 200 }, (_, i) => `many${i}@example.com`)
  const sent = await Promise.all(emails.map((email) => c.sendLink(email)))
  assert.ok(sent.every((s) => s.expiresIn === 900))
  const mails = await Promise.all(emails.map((email) => testbed.mail(email)))
  const verifications = await Promise.all(mails.map((mail) => c.verifyToken(/** @type {string} */ (mail.token))))
  assert.deepEqual(
    verifications.map((v) => v.user.email),
    emails,
  )
  assert.equal(new Set(verifications.map((v) => v.user.id)).size, 200)
  const claims = await Promise.all(verifications.map((v) => c.verifySession(v.token)))
  assert.deepEqual(
    claims.map((cl) => cl.email),
    emails,
  )
  // And 200 failures at once.
  const failures = await Promise.allSettled(emails.map((_, i) => c.verifyToken(`unknown-${i}`)))
  assert.ok(failures.every((f) => f.status === 'rejected' && f.reason.code === 'INVALID_TOKEN'))
})

test('a call in flight leaves the event loop free', async () => {
  // The stub server runs on this thread's event loop: the call can only be
  // answered if waiting for the answer does not block it.
  const stub = await Stub.start()
  try {
    stub.reply({ status: 200, hold: true })
    const c = new Client({ appKey: 'mk_k', baseUrl: stub.baseUrl, maxRetries: 0 })
    const call = c.sendLink('a@example.com')
    await stub.nextRequest()
    let ticks = 0
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        if (++ticks === 3) {
          clearInterval(timer)
          resolve(undefined)
        }
      }, 1)
    })
    stub.release(200, { success: true, expires_in: 60 })
    assert.deepEqual(await call, { expiresIn: 60 })
  } finally {
    await stub.close()
  }
})

test('the I/O thread and the event loop stop polling soon after the last call', async () => {
  // Between calls close together the I/O thread polls its sockets and the
  // event loop turns without blocking, instead of sleeping; once calls stop
  // both must go back to sleep, not keep a core busy.
  const c = client()
  for (let i = 0; i < 50; i++) {
    await assert.rejects(c.verifyToken('mt_unknown'), { code: 'INVALID_TOKEN' })
  }
  await new Promise((resolve) => setTimeout(resolve, 50))
  const before = process.cpuUsage()
  await new Promise((resolve) => setTimeout(resolve, 500))
  const used = process.cpuUsage(before)
  const ms = (used.user + used.system) / 1000
  assert.ok(ms < 250, `the process used ${ms} ms of CPU in 500 ms without calls`)
})

test('worker threads have clients of their own, and exit cleanly mid-call', async () => {
  // Each environment keeps its own handles on its own event loop; a worker
  // that ends, even with calls in flight, must close them (Node aborts the
  // process when a worker's loop still has a handle open).
  const { Worker } = await import('node:worker_threads')
  const { fileURLToPath } = await import('node:url')
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { Client } = require(workerData.module)
    const c = new Client({ appKey: workerData.appKey, baseUrl: workerData.baseUrl })
    ;(async () => {
      const codes = []
      for (let i = 0; i < 20; i++) {
        codes.push(await c.verifyToken('mt_unknown').then(() => 'OK', (e) => e.code))
      }
      parentPort.postMessage(codes)
      // Leaves calls in flight as it ends.
      for (let i = 0; i < 20; i++) c.verifyToken('mt_unknown').catch(() => {})
      if (workerData.exit) process.exit(0)
    })()
  `
  const module = fileURLToPath(new URL('../lib/index.js', import.meta.url))
  for (const exit of [false, true]) {
    const workers = Array.from(
      { length: 3 },
      () => new Worker(code, { eval: true, workerData: { module, exit, appKey: app.app_key, baseUrl: testbed.baseUrl } }),
    )
    const results = await Promise.all(
      workers.map(
        (worker) =>
          new Promise((resolve, reject) => {
            /** @type {unknown} */
            let codes
            worker.on('message', (message) => (codes = message))
            worker.on('error', reject)
            worker.on('exit', (exitCode) => resolve({ exitCode, codes }))
          }),
      ),
    )
    for (const result of results) {
      assert.deepEqual(result, { exitCode: 0, codes: Array(20).fill('INVALID_TOKEN') })
    }
  }
  // This thread's clients still work.
  await assert.rejects(client().verifyToken('mt_unknown'), { code: 'INVALID_TOKEN' })
})

test('new Client() reads MAGICAUTH_APP_KEY and MAGICAUTH_BASE_URL; options win', async () => {
  const saved = { ...process.env }
  try {
    process.env.MAGICAUTH_APP_KEY = app.app_key
    process.env.MAGICAUTH_BASE_URL = testbed.baseUrl
    const fromEnv = new Client()
    assert.equal(fromEnv.baseUrl, testbed.baseUrl)
    assert.deepEqual(await fromEnv.sendLink('env@example.com'), { expiresIn: 900 })

    const keyFromEnv = new Client({ timeoutMs: 5000 })
    assert.deepEqual(await keyFromEnv.sendLink('env2@example.com'), { expiresIn: 900 })

    const explicit = new Client({ appKey: 'mk_wrongwrongwrongwrongwrongwrongwrongwr', baseUrl: `${testbed.baseUrl}/` })
    assert.equal(explicit.baseUrl, testbed.baseUrl)
    await assert.rejects(explicit.sendLink('env@example.com'), { code: 'INVALID_APP_KEY', status: 401 })

    delete process.env.MAGICAUTH_BASE_URL
    assert.equal(new Client().baseUrl, 'https://magicauth.app/api')
    process.env.MAGICAUTH_APP_KEY = '   '
    assert.throws(() => new Client(), { code: 'CONFIGURATION' })
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
  }
})

test('the key never shows in inspect, JSON or errors', async () => {
  const c = client()
  for (const shown of [inspect(c), inspect(c, { showHidden: true, depth: null }), JSON.stringify(c), String(c)]) {
    assert.ok(!shown.includes(app.app_key), shown)
    assert.ok(!shown.includes(app.app_key.slice(3)), shown)
  }
  assert.equal(inspect(c), `Client { baseUrl: '${testbed.baseUrl}' }`)
  const errors = await Promise.allSettled([c.verifyToken('nope'), c.sendLink('not-an-email'), c.verifySession('x.y.z')])
  for (const result of errors) {
    assert.equal(result.status, 'rejected')
    const shown = inspect(result.reason, { depth: null, showHidden: true })
    assert.ok(!shown.includes(app.app_key.slice(3)), shown)
  }
})

test('VERSION is the package version', async () => {
  const { readFile } = await import('node:fs/promises')
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
  assert.equal(VERSION, pkg.version)
})
