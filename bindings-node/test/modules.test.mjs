// The package imports as an ES module and as CommonJS, through its "exports"
// map, and both give the same classes (so `instanceof` works across them).

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { test } from 'node:test'

import * as esm from 'magicauth'

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url))
const EXPORTS = [
  'APIConnectionError',
  'APITimeoutError',
  'AuthenticationError',
  'Client',
  'ConfigurationError',
  'InvalidRequestError',
  'InvalidSessionError',
  'InvalidTokenError',
  'MagicAuthError',
  'PermissionDeniedError',
  'RateLimitError',
  'ServerError',
  'TokenAlreadyUsedError',
  'TokenExpiredError',
  'VERSION',
  'tokenFromUrl',
]

test('import and require give the same exports, the same objects', () => {
  const cjs = createRequire(import.meta.url)('magicauth')
  assert.deepEqual(Object.keys(esm).sort(), EXPORTS)
  assert.deepEqual(Object.keys(cjs).sort(), EXPORTS)
  for (const name of EXPORTS) assert.equal(esm[/** @type {keyof typeof esm} */ (name)], cjs[name], name)
})

test('a consumer package can import and require it by name', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'magicauth-consumer-'))
  try {
    await mkdir(join(dir, 'node_modules'))
    await symlink(PACKAGE_DIR, join(dir, 'node_modules', 'magicauth'), 'dir')
    const check = (/** @type {string} */ load) => `
      ${load}
      const error = new TokenExpiredError('Token expired', { code: 'TOKEN_EXPIRED', status: 400 })
      if (!(error instanceof MagicAuthError) || error.code !== 'TOKEN_EXPIRED') throw new Error('bad error class')
      if (tokenFromUrl('https://a.example/cb?magic_token=t1') !== 't1') throw new Error('bad tokenFromUrl')
      try { new Client() } catch (e) { if (!(e instanceof ConfigurationError)) throw e }
      console.log(typeof Client)`
    await writeFile(
      join(dir, 'esm.mjs'),
      check(`import { Client, ConfigurationError, MagicAuthError, TokenExpiredError, tokenFromUrl } from 'magicauth'`),
    )
    await writeFile(
      join(dir, 'cjs.cjs'),
      check(`const { Client, ConfigurationError, MagicAuthError, TokenExpiredError, tokenFromUrl } = require('magicauth')`),
    )
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MAGICAUTH_')))
    for (const file of ['esm.mjs', 'cjs.cjs']) {
      const { stdout } = await promisify(execFile)(process.execPath, [file], { cwd: dir, env, timeout: 30_000 })
      assert.equal(stdout.trim(), 'function', file)
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
