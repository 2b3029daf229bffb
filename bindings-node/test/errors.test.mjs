// Every error the core can report reaches JavaScript as the right class with
// the right `code`, `status`, `retryAfter` and `cause`. A stub server on
// loopback gives the answers the real server cannot easily be made to give.

import assert from 'node:assert/strict'
import { inspect } from 'node:util'
import { after, before, describe, test } from 'node:test'

import * as magicauth from 'magicauth'

import { Stub, closedPort } from './support/stub.mjs'

const KEY = 'mk_n0tForYourEyes0nlyXXXXXXXXXXXXXXXXXXXX'

/** @type {Stub} */
let stub
before(async () => {
  stub = await Stub.start()
})
after(async () => {
  await stub.close()
})

/** @param {Partial<import('magicauth').ClientOptions>} [options] */
const client = (options) => new magicauth.Client({ appKey: KEY, baseUrl: stub.baseUrl, maxRetries: 0, ...options })

/**
 * The error `promise` rejects with, after checking it is a MagicAuthError
 * whose native cause carries the same fields and never the key.
 * @param {Promise<unknown>} promise
 * @returns {Promise<import('magicauth').MagicAuthError>}
 */
async function rejection(promise) {
  const error = await promise.then(
    (value) => assert.fail(`expected a rejection, got ${inspect(value)}`),
    (/** @type {unknown} */ e) => e,
  )
  assert.ok(error instanceof magicauth.MagicAuthError, `not a MagicAuthError: ${inspect(error)}`)
  assert.ok(error instanceof Error)
  assert.ok(error.cause instanceof Error, 'the native error is the cause')
  const cause = /** @type {Error & Record<string, unknown>} */ (error.cause)
  assert.equal(cause.code, error.code)
  assert.equal(cause.status, error.status)
  for (const shown of [error.message, error.stack ?? '', inspect(error, { depth: null }), String(cause)]) {
    assert.ok(!shown.includes(KEY), `the app key shows in ${shown}`)
  }
  return error
}

/** @param {string} code @param {string} message */
const apiError = (code, message) => ({ success: false, error: message, code })

// [API code, HTTP status, class, Node code]: every code of SDK.md's table.
const API_CODES = /** @type {const} */ ([
  ['invalid_token', 400, 'InvalidTokenError', 'INVALID_TOKEN'],
  ['token_used', 400, 'TokenAlreadyUsedError', 'TOKEN_USED'],
  ['token_expired', 400, 'TokenExpiredError', 'TOKEN_EXPIRED'],
  ['invalid_app_key', 401, 'AuthenticationError', 'INVALID_APP_KEY'],
  ['app_disabled', 403, 'PermissionDeniedError', 'APP_DISABLED'],
  ['redirect_not_allowed', 403, 'PermissionDeniedError', 'REDIRECT_NOT_ALLOWED'],
  ['rate_limited', 429, 'RateLimitError', 'RATE_LIMITED'],
  ['quota_exceeded', 429, 'RateLimitError', 'QUOTA_EXCEEDED'],
  ['invalid_request', 400, 'InvalidRequestError', 'INVALID_REQUEST'],
  ['payload_too_large', 413, 'InvalidRequestError', 'PAYLOAD_TOO_LARGE'],
  ['internal_error', 500, 'ServerError', 'INTERNAL_ERROR'],
  // Codes a newer server might send are classified by status.
  ['brand_new_code', 409, 'InvalidRequestError', 'BRAND_NEW_CODE'],
  ['brand_new_code', 401, 'AuthenticationError', 'BRAND_NEW_CODE'],
  // A 5xx with a code the contract does not know is SERVER_ERROR, as SDK.md has it.
  ['brand_new_code', 503, 'ServerError', 'SERVER_ERROR'],
])

describe('API error codes', () => {
  for (const [code, status, className, nodeCode] of API_CODES) {
    test(`${code} (HTTP ${status}) is ${className} with code ${nodeCode}`, async () => {
      stub.reply({ status, body: apiError(code, `message of ${code}`) })
      const error = await rejection(client().verifyToken('some-token'))
      const Class = magicauth[className]
      assert.ok(error instanceof Class, `${inspect(error)} is not a ${className}`)
      assert.equal(error.name, className)
      assert.equal(error.code, nodeCode)
      assert.equal(error.status, status)
      assert.equal(error.message, `message of ${code}`)
      assert.equal(error.rawBody, undefined)
      assert.match(String(error.cause), new RegExp(`\\(${nodeCode.toLowerCase()}, HTTP ${status}\\)`))
      assert.equal(stub.requests.length, 1, 'not retried with maxRetries: 0')
    })
  }

  test('the request carries the key, and the same Idempotency-Key on every attempt', async () => {
    stub.reply({ status: 503, body: apiError('internal_error', 'busy') }, { status: 400, body: apiError('invalid_token', 'nope') })
    await rejection(client({ maxRetries: 2 }).verifyToken('t0ken'))
    assert.equal(stub.requests.length, 2)
    const [first, second] = stub.requests
    assert.equal(first.url, '/api/verify-token')
    assert.deepEqual(JSON.parse(first.body), { token: 't0ken', app_key: KEY })
    assert.ok(first.headers['idempotency-key'])
    assert.equal(first.headers['idempotency-key'], second.headers['idempotency-key'])
    assert.match(String(first.headers['user-agent']), /^magicauth-node\//)
  })
})

describe('responses that are not the API JSON', () => {
  test('an HTML 502 is ServerError with code SERVER_ERROR and the body kept', async () => {
    stub.reply({ status: 502, body: '<html><body>Bad Gateway</body></html>' })
    const error = await rejection(client().verifyToken('t'))
    assert.ok(error instanceof magicauth.ServerError)
    assert.equal(error.code, 'SERVER_ERROR')
    assert.equal(error.status, 502)
    assert.equal(error.rawBody, '<html><body>Bad Gateway</body></html>')
  })

  test('a 429 with Retry-After is RateLimitError with retryAfter in seconds', async () => {
    stub.reply({ status: 429, body: apiError('rate_limited', 'slow down'), headers: { 'retry-after': '7' } })
    const error = await rejection(client().sendLink('a@example.com'))
    assert.ok(error instanceof magicauth.RateLimitError)
    assert.equal(error.code, 'RATE_LIMITED')
    assert.equal(error.retryAfter, 7)
  })

  test('a Retry-After beyond the cap is not waited for', async () => {
    stub.reply({ status: 429, body: apiError('rate_limited', 'slow down'), headers: { 'retry-after': '3600' } })
    const error = await rejection(client({ maxRetries: 2 }).sendLink('a@example.com'))
    assert.equal(error.retryAfter, 3600)
    assert.equal(stub.requests.length, 1)
  })

  test('a 200 that is not JSON is ServerError', async () => {
    stub.reply({ status: 200, body: 'OK' })
    const error = await rejection(client().verifyToken('t'))
    assert.ok(error instanceof magicauth.ServerError)
    assert.equal(error.code, 'SERVER_ERROR')
    assert.equal(error.rawBody, 'OK')
  })
})

describe('errors without an answer', () => {
  test('nothing listening is APIConnectionError with code CONNECTION', async () => {
    const port = await closedPort()
    const error = await rejection(client({ baseUrl: `http://127.0.0.1:${port}/api` }).verifyToken('t'))
    assert.ok(error instanceof magicauth.APIConnectionError)
    assert.equal(error.code, 'CONNECTION')
    assert.equal(error.status, undefined)
    assert.match(error.message, /could not reach the MagicAuth server/)
  })

  test('no answer in time is APITimeoutError with code TIMEOUT', async () => {
    stub.reply({ status: 200, hold: true })
    const error = await rejection(client({ timeoutMs: 200 }).verifyToken('t'))
    assert.ok(error instanceof magicauth.APITimeoutError)
    assert.equal(error.code, 'TIMEOUT')
  })

  test('a bad session JWT is InvalidSessionError with code INVALID_SESSION', async () => {
    const error = await rejection(client().verifySession('not.a.jwt'))
    assert.ok(error instanceof magicauth.InvalidSessionError)
    assert.equal(error.code, 'INVALID_SESSION')
    assert.equal(error.status, undefined)
  })
})

describe('configuration', () => {
  /** @param {() => unknown} make */
  function configurationError(make) {
    const env = { ...process.env }
    delete process.env.MAGICAUTH_APP_KEY
    delete process.env.MAGICAUTH_BASE_URL
    try {
      make()
    } catch (error) {
      assert.ok(error instanceof magicauth.ConfigurationError, inspect(error))
      assert.equal(error.code, 'CONFIGURATION')
      assert.ok(error.cause instanceof Error)
      assert.ok(!inspect(error).includes(KEY))
      return error
    } finally {
      Object.assign(process.env, env)
    }
    assert.fail('no ConfigurationError')
  }

  test('no app key', () => {
    const error = configurationError(() => new magicauth.Client())
    assert.match(error.message, /no app key/)
  })

  test('a base URL that is not http(s)', () => {
    configurationError(() => new magicauth.Client({ appKey: KEY, baseUrl: 'ftp://example.com' }))
    configurationError(() => new magicauth.Client({ appKey: KEY, baseUrl: 'not a url' }))
  })

  test('bad numbers', () => {
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      configurationError(() => new magicauth.Client({ appKey: KEY, timeoutMs }))
    }
    for (const maxRetries of [-1, 1.5, Number.NaN]) {
      configurationError(() => new magicauth.Client({ appKey: KEY, maxRetries }))
    }
  })

  test('arguments of the wrong type are TypeErrors, as rejections', async () => {
    const c = client()
    // @ts-expect-error: a number is not a token
    await assert.rejects(c.verifyToken(42), TypeError)
    // @ts-expect-error: an email is required
    await assert.rejects(c.sendLink(undefined), TypeError)
    // @ts-expect-error: not a string
    assert.throws(() => magicauth.tokenFromUrl(null), TypeError)
    // @ts-expect-error: options are an object
    assert.throws(() => new magicauth.Client('mk_key'), TypeError)
  })
})

test('the error classes form one hierarchy, usable without the native module', () => {
  const error = new magicauth.TokenExpiredError('Token expired', { code: 'TOKEN_EXPIRED', status: 400 })
  assert.ok(error instanceof magicauth.MagicAuthError)
  assert.ok(error instanceof Error)
  assert.equal(error.name, 'TokenExpiredError')
  assert.equal(String(error), 'TokenExpiredError: Token expired')
  assert.equal(error.code, 'TOKEN_EXPIRED')
  assert.equal(error.status, 400)
  assert.equal(error.retryAfter, undefined)
  for (const name of [
    'InvalidTokenError',
    'TokenAlreadyUsedError',
    'TokenExpiredError',
    'AuthenticationError',
    'PermissionDeniedError',
    'RateLimitError',
    'InvalidRequestError',
    'ServerError',
    'APIConnectionError',
    'APITimeoutError',
    'InvalidSessionError',
    'ConfigurationError',
  ]) {
    const Class = /** @type {typeof magicauth.MagicAuthError} */ (magicauth[/** @type {keyof typeof magicauth} */ (name)])
    assert.equal(Object.getPrototypeOf(Class), magicauth.MagicAuthError, name)
    assert.equal(Class.prototype.name, name)
  }
})
