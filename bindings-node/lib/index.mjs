// The ES module entry: the CommonJS module's exports, so `import` and
// `require` share one set of classes (`instanceof` works across both).
import magicauth from './index.js'

export const {
  Client,
  tokenFromUrl,
  VERSION,
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
} = magicauth
