// Runs the shared contract vectors (tests/contract/cases.json) with the Node
// SDK against the real server: one fresh test bed per case, since cases move
// the server's clock.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import * as magicauth from 'magicauth'

import { REPO, Testbed } from './support/testbed.mjs'

const CASES = JSON.parse(readFileSync(join(REPO, 'tests', 'contract', 'cases.json'), 'utf8'))
assert.equal(CASES.format, 1)

// SDK.md's table: Rust variant → Node class.
const KINDS = {
  InvalidToken: magicauth.InvalidTokenError,
  TokenAlreadyUsed: magicauth.TokenAlreadyUsedError,
  TokenExpired: magicauth.TokenExpiredError,
  InvalidAppKey: magicauth.AuthenticationError,
  Forbidden: magicauth.PermissionDeniedError,
  RateLimited: magicauth.RateLimitError,
  InvalidRequest: magicauth.InvalidRequestError,
  Server: magicauth.ServerError,
  Connection: magicauth.APIConnectionError,
  Timeout: magicauth.APITimeoutError,
  InvalidSession: magicauth.InvalidSessionError,
  Configuration: magicauth.ConfigurationError,
}

// The result fields that must be `Date`s in the Node SDK.
const DATE_FIELDS = new Set(['email_verified_at', 'last_login_at'])

const snake = (/** @type {string} */ name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/**
 * Results as the vectors see them: snake_case keys, timestamps as RFC 3339 `Z` strings.
 * @param {unknown} value
 * @param {string} [key]
 * @returns {unknown}
 */
function toJson(value, key = '') {
  if (DATE_FIELDS.has(key)) {
    assert.ok(value instanceof Date, `${key} is a Date: ${value}`)
    return value.toISOString().replace(/\.\d{3}Z$/, 'Z')
  }
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [snake(k), toJson(v, snake(k))]))
  }
  return value
}

/** @param {any} value @param {Record<string, any>} vars @returns {any} */
function subst(value, vars) {
  if (typeof value === 'string' && value.startsWith('$')) return vars[value.slice(1)]
  if (Array.isArray(value)) return value.map((v) => subst(v, vars))
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, subst(v, vars)]))
  }
  return value
}

/** @param {any} value @param {string} path */
function lookup(value, path) {
  for (const key of path.split('.')) {
    assert.ok(value !== null && typeof value === 'object' && key in value, `no ${path} in ${JSON.stringify(value)}`)
    value = value[key]
  }
  return value
}

const text = (/** @type {unknown} */ v) => (typeof v === 'string' ? v : JSON.stringify(v))

/** @param {string} path @param {unknown} got @param {unknown} want */
function check(path, got, want) {
  let ok
  if (want === '<timestamp>') {
    ok = typeof got === 'string' && got.endsWith('Z') && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(got)
  } else if (want === '<string>') {
    ok = typeof got === 'string' && got !== ''
  } else if (want === '<positive-int>') {
    ok = typeof got === 'number' && got > 0 && Number.isInteger(got)
  } else if (want === null || got === null || got === undefined) {
    ok = want === (got ?? null)
  } else {
    ok = text(got) === text(want)
  }
  assert.ok(ok, `${path}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`)
}

/** @param {magicauth.Client} client @param {string} action @param {any} arg */
async function sdkCall(client, action, arg) {
  switch (action) {
    case 'send_link':
      return toJson(await client.sendLink(arg.email, arg.redirect_url))
    case 'verify_token':
      return toJson(await client.verifyToken(arg.token))
    case 'verify_session':
      return toJson(await client.verifySession(arg.jwt))
    case 'token_from_url':
      return { value: client.tokenFromUrl(arg.input) }
    default:
      throw new Error(action)
  }
}

const SDK_ACTIONS = new Set(['send_link', 'verify_token', 'verify_session', 'token_from_url'])

/** @param {Testbed} testbed @param {Record<string, any>} vars @param {any} step */
async function runStep(testbed, vars, step) {
  const action = Object.keys(step).find((k) => !['expect', 'save', 'client'].includes(k))
  assert.ok(action, 'a step has an action')
  const arg = subst(step[action], vars)
  /** @type {unknown} */
  let error = null
  /** @type {any} */
  let result = null
  if (SDK_ACTIONS.has(action)) {
    const overrides = subst(step.client ?? {}, vars)
    const client = new magicauth.Client({
      appKey: overrides.app_key ?? vars.app_key,
      baseUrl: overrides.base_url ?? testbed.baseUrl,
      maxRetries: overrides.max_retries,
    })
    try {
      result = await sdkCall(client, action, arg)
    } catch (e) {
      if (!(e instanceof magicauth.MagicAuthError)) throw e
      error = e
    }
  } else if (action === 'read_mail') {
    result = await testbed.mail(arg.to, arg.count ?? 1)
  } else if (action === 'create_app') {
    result = await testbed.createApp(...arg)
  } else if (action === 'cli') {
    const out = await testbed.cli(...arg)
    try {
      result = JSON.parse(out)
    } catch {
      result = { stdout: out }
    }
  } else if (action === 'advance_clock') {
    await testbed.advanceClock(arg)
    result = {}
  } else {
    assert.fail(`unknown action ${action}`)
  }

  const expect = subst(step.expect ?? { ok: {} }, vars)
  if ('error' in expect) {
    const want = expect.error
    assert.ok(error instanceof magicauth.MagicAuthError, `expected ${JSON.stringify(want)}, got ${JSON.stringify(result)}`)
    const Class = KINDS[/** @type {keyof typeof KINDS} */ (want.kind)]
    assert.ok(error instanceof Class, `expected ${want.kind}, got ${error.name}: ${error.message}`)
    assert.equal(error.name, Class.name)
    assert.equal(error.code, want.code.toUpperCase())
    const got = { kind: want.kind, code: error.code.toLowerCase(), status: error.status, retry_after: error.retryAfter }
    for (const [field, expected] of Object.entries(want)) {
      check(field, got[/** @type {keyof typeof got} */ (field)], expected)
    }
    return
  }
  assert.equal(error, null, `unexpected ${error}`)
  for (const [path, want] of Object.entries(expect.ok ?? {})) check(path, lookup(result, path), want)
  for (const [name, path] of Object.entries(step.save ?? {})) vars[name] = lookup(result, /** @type {string} */ (path))
}

for (const testCase of CASES.cases) {
  test(testCase.name, async () => {
    const testbed = await Testbed.start()
    try {
      const created = await testbed.createApp(...testCase.app)
      const vars = {
        app_id: created.app_id,
        app_key: created.app_key,
        server_url: testbed.serverUrl,
        base_url: testbed.baseUrl,
      }
      for (const [i, step] of testCase.steps.entries()) {
        try {
          await runStep(testbed, vars, step)
        } catch (e) {
          if (e instanceof Error) e.message = `step ${i} ${JSON.stringify(step)}: ${e.message}`
          throw e
        }
      }
    } finally {
      await testbed.close()
    }
  })
}
