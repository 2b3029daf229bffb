'use strict'
// magicauth: passwordless sign-in with MagicAuth magic links. A native (Rust)
// client with typed results and errors; see README.md.

const { Client, tokenFromUrl, VERSION } = require('./client.js')
const errors = require('./errors.js')

module.exports = {
  Client,
  tokenFromUrl,
  VERSION,
  MagicAuthError: errors.MagicAuthError,
  InvalidTokenError: errors.InvalidTokenError,
  TokenAlreadyUsedError: errors.TokenAlreadyUsedError,
  TokenExpiredError: errors.TokenExpiredError,
  AuthenticationError: errors.AuthenticationError,
  PermissionDeniedError: errors.PermissionDeniedError,
  RateLimitError: errors.RateLimitError,
  InvalidRequestError: errors.InvalidRequestError,
  ServerError: errors.ServerError,
  APIConnectionError: errors.APIConnectionError,
  APITimeoutError: errors.APITimeoutError,
  InvalidSessionError: errors.InvalidSessionError,
  ConfigurationError: errors.ConfigurationError,
}
