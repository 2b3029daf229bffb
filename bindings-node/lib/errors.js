'use strict'
// The errors of the MagicAuth client. Every error is a `MagicAuthError` with
// the API's code in upper case (`'TOKEN_USED'`), the HTTP `status` when the
// server answered, `retryAfter` (seconds) for rate limits, and the native
// (Rust) error as `cause`. Which class an error gets is decided by the Rust
// core (`kind`); this file only maps kinds to classes.

class MagicAuthError extends Error {
  /**
   * @param {string} message
   * @param {{code: string, status?: number, retryAfter?: number, rawBody?: string, cause?: unknown}} details
   */
  constructor(message, { code, status, retryAfter, rawBody, cause }) {
    super(message, cause === undefined ? undefined : { cause })
    this.code = code
    this.status = status
    this.retryAfter = retryAfter
    this.rawBody = rawBody
  }
}

class InvalidTokenError extends MagicAuthError {}
class TokenAlreadyUsedError extends MagicAuthError {}
class TokenExpiredError extends MagicAuthError {}
class AuthenticationError extends MagicAuthError {}
class PermissionDeniedError extends MagicAuthError {}
class RateLimitError extends MagicAuthError {}
class InvalidRequestError extends MagicAuthError {}
class ServerError extends MagicAuthError {}
class APIConnectionError extends MagicAuthError {}
class APITimeoutError extends MagicAuthError {}
class InvalidSessionError extends MagicAuthError {}
class ConfigurationError extends MagicAuthError {}

// The core's variant (the native error's `kind`) → class, per SDK.md.
const CLASSES = {
  InvalidToken: InvalidTokenError,
  TokenAlreadyUsed: TokenAlreadyUsedError,
  TokenExpired: TokenExpiredError,
  InvalidAppKey: AuthenticationError,
  Forbidden: PermissionDeniedError,
  RateLimited: RateLimitError,
  InvalidRequest: InvalidRequestError,
  Server: ServerError,
  Connection: APIConnectionError,
  Timeout: APITimeoutError,
  InvalidSession: InvalidSessionError,
  Configuration: ConfigurationError,
}

for (const Class of [MagicAuthError, ...Object.values(CLASSES)]) {
  // `TokenExpiredError: Token expired` in stack traces, whatever a minifier does to class names.
  Object.defineProperty(Class.prototype, 'name', {
    value: Class.name,
    writable: true,
    enumerable: false,
    configurable: true,
  })
}

/**
 * The MagicAuth error for an error thrown by the native module; anything
 * else (a programming error) is returned unchanged.
 * @param {unknown} error
 * @returns {unknown}
 */
function fromNative(error) {
  if (error === null || typeof error !== 'object' || !('kind' in error) || typeof error.kind !== 'string') {
    return error
  }
  const native = /** @type {{kind: string, code: string, reason?: string, message: string, status?: number, retryAfter?: number, rawBody?: string}} */ (
    error
  )
  const Class = Object.hasOwn(CLASSES, native.kind) ? CLASSES[/** @type {keyof typeof CLASSES} */ (native.kind)] : MagicAuthError
  return new Class(native.reason ?? native.message, {
    code: native.code,
    status: native.status,
    retryAfter: native.retryAfter,
    rawBody: native.rawBody,
    cause: error,
  })
}

module.exports = {
  MagicAuthError,
  InvalidTokenError,
  TokenAlreadyUsedError,
  TokenExpiredError,
  AuthenticationError,
  PermissionDeniedError,
  RateLimitError,
  InvalidRequestError,
  ServerError,
  APIConnectionError,
  APITimeoutError,
  InvalidSessionError,
  ConfigurationError,
  fromNative,
}
