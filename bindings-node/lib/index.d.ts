// Types of the `magicauth` package. The result types come from the
// declarations napi-rs generates for the native module (native/index.d.ts).

import type {
  ClientOptions,
  SendLinkResponse,
  SessionClaims,
  User,
  Verification,
} from '../native/index.js'

export type { ClientOptions, SendLinkResponse, SessionClaims, User, Verification }

/** The version of the package (and of its Rust core). */
export declare const VERSION: string

/** The `magic_token` of a callback URL or query string, or `null` when there is none. */
export declare function tokenFromUrl(urlOrQuery: string): string | null

/**
 * A MagicAuth client. Create one per process and share it: it holds one
 * connection pool. Every method returns a Promise; the network work runs on
 * a native thread pool, never on the event loop.
 *
 * Options left out are read from `MAGICAUTH_APP_KEY` and `MAGICAUTH_BASE_URL`
 * (default `https://magicauth.app/api`). `timeoutMs` is per attempt (default
 * 10000); `maxRetries` defaults to 2. Connection errors, timeouts, 429 and
 * 500/502/503/504 are retried with the same `Idempotency-Key`.
 *
 * @throws {ConfigurationError} without an app key, or with a bad option.
 */
export declare class Client {
  constructor(options?: ClientOptions)
  /** The API base URL in use. */
  readonly baseUrl: string
  /**
   * Emails a sign-in link to `email`, leading to `redirectUrl` (one of the
   * app's allowed redirect URLs; its first one when left out).
   */
  sendLink(email: string, redirectUrl?: string | null): Promise<SendLinkResponse>
  /**
   * Exchanges a link's token for the user and a session JWT. Single-use: a
   * second call rejects with {@link TokenAlreadyUsedError}. `user.emailVerifiedAt`
   * and `user.lastLoginAt` are `Date`s.
   */
  verifyToken(token: string): Promise<Verification>
  /**
   * Checks a session JWT offline against the server's public keys (fetched
   * once and cached): signature, issuer, audience (this app) and lifetime.
   * Resolves to its claims; `iat` and `exp` are Unix seconds, as in the JWT.
   */
  verifySession(jwt: string): Promise<SessionClaims>
  /** The `magic_token` of a callback URL or query string, or `null`. */
  tokenFromUrl(urlOrQuery: string): string | null
  /** The `magic_token` of a callback URL or query string, or `null`. */
  static tokenFromUrl(urlOrQuery: string): string | null
  toJSON(): { baseUrl: string }
}

/**
 * The API's error codes in upper case, plus `SERVER_ERROR` (a 5xx that is
 * not the API's JSON), `CONNECTION`, `TIMEOUT`, `INVALID_SESSION` and
 * `CONFIGURATION`.
 */
export type MagicAuthErrorCode =
  | 'INVALID_TOKEN'
  | 'TOKEN_USED'
  | 'TOKEN_EXPIRED'
  | 'INVALID_APP_KEY'
  | 'APP_DISABLED'
  | 'REDIRECT_NOT_ALLOWED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'QUOTA_EXCEEDED'
  | 'INVALID_REQUEST'
  | 'PAYLOAD_TOO_LARGE'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'INTERNAL_ERROR'
  | 'SERVER_ERROR'
  | 'CONNECTION'
  | 'TIMEOUT'
  | 'INVALID_SESSION'
  | 'CONFIGURATION'
  // Codes a newer server may send; their class follows the HTTP status.
  | (string & {})

/** Base class of every MagicAuth error. */
export declare class MagicAuthError extends Error {
  constructor(
    message: string,
    details: { code: string; status?: number; retryAfter?: number; rawBody?: string; cause?: unknown },
  )
  /** Stable machine code, e.g. `'TOKEN_USED'`, `'CONNECTION'`. */
  readonly code: MagicAuthErrorCode
  /** HTTP status, when the server answered. */
  readonly status: number | undefined
  /** Seconds the server asked to wait (rate limits). */
  readonly retryAfter: number | undefined
  /** The response body, when it was not the API's error JSON (a proxy's error page, say). */
  readonly rawBody: string | undefined
  /** The native (Rust) error, with the full message chain. */
  readonly cause?: unknown
}

/** `INVALID_TOKEN`: the token is unknown, malformed, or for another app. */
export declare class InvalidTokenError extends MagicAuthError {}
/** `TOKEN_USED`: the link was used before. */
export declare class TokenAlreadyUsedError extends MagicAuthError {}
/** `TOKEN_EXPIRED`: the link is older than its app's lifetime. */
export declare class TokenExpiredError extends MagicAuthError {}
/** `INVALID_APP_KEY`: the app key is unknown or was rotated away. */
export declare class AuthenticationError extends MagicAuthError {}
/** `APP_DISABLED` or `REDIRECT_NOT_ALLOWED`. */
export declare class PermissionDeniedError extends MagicAuthError {}
/** `RATE_LIMITED` or `QUOTA_EXCEEDED`; see `retryAfter`. */
export declare class RateLimitError extends MagicAuthError {}
/** `INVALID_REQUEST` or `PAYLOAD_TOO_LARGE`: bad input. */
export declare class InvalidRequestError extends MagicAuthError {}
/** `INTERNAL_ERROR` or another server failure (`SERVER_ERROR`). */
export declare class ServerError extends MagicAuthError {}
/** `CONNECTION`: the server could not be reached, or the connection broke. */
export declare class APIConnectionError extends MagicAuthError {}
/** `TIMEOUT`: no answer within `timeoutMs`. */
export declare class APITimeoutError extends MagicAuthError {}
/** `INVALID_SESSION`: a session JWT failed `verifySession`. */
export declare class InvalidSessionError extends MagicAuthError {}
/** `CONFIGURATION`: no app key, a bad base URL or a bad option. */
export declare class ConfigurationError extends MagicAuthError {}
