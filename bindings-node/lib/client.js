'use strict'
// `Client`: the public face of the native client. It checks argument types,
// turns native errors into the exported error classes, and keeps the app key
// and session tokens out of `util.inspect`. Everything else happens in the
// Rust core.

const { inspect } = require('node:util')
const native = require('../native/index.js')
const { fromNative } = require('./errors.js')

/**
 * @param {string} name
 * @param {unknown} value
 */
function requireString(name, value) {
  if (typeof value !== 'string') {
    throw new TypeError(`${name} must be a string, got ${value === null ? 'null' : typeof value}`)
  }
}

/**
 * The `magic_token` of a callback URL or query string, or `null`.
 * @param {string} urlOrQuery
 * @returns {string | null}
 */
function tokenFromUrl(urlOrQuery) {
  requireString('urlOrQuery', urlOrQuery)
  return native.tokenFromUrl(urlOrQuery)
}

/**
 * Keeps a verification's session token out of `util.inspect` (and so out of
 * `console.log`), as the Python SDK keeps it out of `repr`: it is a
 * credential. The object stays a plain object with the token as a field, so
 * JSON and destructuring see it as before.
 * @template {{token: string}} V
 * @param {V} verification
 * @returns {V}
 */
function hideToken(verification) {
  Object.defineProperty(verification, inspect.custom, {
    /**
     * @param {number} _depth
     * @param {import('node:util').InspectOptionsStylized} options
     */
    value(_depth, options) {
      return inspect({ ...verification, token: '***' }, options)
    },
  })
  return verification
}

class Client {
  /** @type {import('../native/index.js').NativeClient} */
  #native

  /** @param {import('../native/index.js').ClientOptions} [options] */
  constructor(options) {
    if (options != null && typeof options !== 'object') {
      throw new TypeError(`options must be an object, got ${typeof options}`)
    }
    try {
      this.#native = new native.NativeClient(options ?? undefined)
    } catch (error) {
      throw fromNative(error)
    }
  }

  /** The API base URL in use. */
  get baseUrl() {
    return this.#native.baseUrl
  }

  /**
   * @param {string} email
   * @param {string | null} [redirectUrl]
   */
  async sendLink(email, redirectUrl) {
    requireString('email', email)
    if (redirectUrl != null) requireString('redirectUrl', redirectUrl)
    try {
      return await this.#native.sendLink(email, redirectUrl)
    } catch (error) {
      throw fromNative(error)
    }
  }

  /** @param {string} token */
  async verifyToken(token) {
    requireString('token', token)
    try {
      return hideToken(await this.#native.verifyToken(token))
    } catch (error) {
      throw fromNative(error)
    }
  }

  /** @param {string} jwt */
  async verifySession(jwt) {
    requireString('jwt', jwt)
    try {
      return await this.#native.verifySession(jwt)
    } catch (error) {
      throw fromNative(error)
    }
  }

  /** @param {string} urlOrQuery */
  tokenFromUrl(urlOrQuery) {
    return tokenFromUrl(urlOrQuery)
  }

  /** @param {string} urlOrQuery */
  static tokenFromUrl(urlOrQuery) {
    return tokenFromUrl(urlOrQuery)
  }

  // Never the app key.
  /**
   * @param {number} _depth
   * @param {import('node:util').InspectOptionsStylized} options
   */
  [inspect.custom](_depth, options) {
    return `Client { baseUrl: ${inspect(this.baseUrl, options)} }`
  }

  toJSON() {
    return { baseUrl: this.baseUrl }
  }
}

module.exports = { Client, tokenFromUrl, VERSION: native.VERSION }
