// The CommonJS entry, required as a CommonJS test file would.
'use strict'

const assert = require('node:assert/strict')
const { test } = require('node:test')

const magicauth = require('magicauth')

test('require("magicauth") gives the client, the helpers and the errors', () => {
  assert.equal(typeof magicauth.Client, 'function')
  assert.equal(magicauth.tokenFromUrl('?magic_token=abc'), 'abc')
  assert.equal(magicauth.Client.tokenFromUrl('magic_token=abc&x=1'), 'abc')
  assert.equal(magicauth.tokenFromUrl('https://a.example/cb'), null)
  const client = new magicauth.Client({ appKey: 'mk_k', baseUrl: 'http://127.0.0.1:9/api' })
  assert.equal(client.tokenFromUrl('?magic_token=x'), 'x')
  assert.ok(new magicauth.RateLimitError('m', { code: 'RATE_LIMITED', retryAfter: 3 }) instanceof magicauth.MagicAuthError)
})
