<?php

declare(strict_types=1);

namespace MagicAuth;

/**
 * Base class of every error the client throws.
 *
 * - `$errorCode`: the API's stable `code` (`token_used`, `invalid_app_key`, …),
 *   or `server_error` (a 5xx that was not the contract's JSON), `connection`,
 *   `timeout`, `configuration`.
 * - `$status`: the HTTP status, or null when no response arrived.
 * - `$retryAfter`: seconds from the `Retry-After` header (rate limits only).
 * - `$rawBody`: the response body when it was not the contract's error JSON
 *   (a proxy's HTML page, say), truncated.
 *
 * Messages never contain the app key or a magic token.
 */
class MagicAuthError extends \RuntimeException
{
    public function __construct(
        string $message,
        public readonly string $errorCode,
        public readonly ?int $status = null,
        public readonly ?int $retryAfter = null,
        public readonly ?string $rawBody = null,
    ) {
        parent::__construct(
            $status === null
                ? sprintf('%s (%s)', $message, $errorCode)
                : sprintf('%s (%s, HTTP %d)', $message, $errorCode, $status),
        );
    }

    /**
     * The error for an API error body `{"error": …, "code": …}`, mapped by
     * `code` as SDK.md's table says; unknown codes are classified by status.
     */
    public static function fromApi(
        string $code,
        string $message,
        int $status,
        ?int $retryAfter = null,
        ?string $rawBody = null,
    ): self {
        $class = match ($code) {
            'invalid_token' => InvalidTokenError::class,
            'token_used' => TokenAlreadyUsedError::class,
            'token_expired' => TokenExpiredError::class,
            'invalid_app_key' => AuthenticationError::class,
            'app_disabled', 'redirect_not_allowed', 'forbidden' => PermissionDeniedError::class,
            'rate_limited', 'quota_exceeded' => RateLimitError::class,
            'invalid_request', 'payload_too_large', 'not_found', 'method_not_allowed' => InvalidRequestError::class,
            'internal_error', 'server_error' => ServerError::class,
            default => match (true) {
                $status === 401 => AuthenticationError::class,
                $status === 403 => PermissionDeniedError::class,
                $status === 429 => RateLimitError::class,
                $status >= 400 && $status < 500 => InvalidRequestError::class,
                default => ServerError::class,
            },
        };

        return new $class($message, $code, $status, $class === RateLimitError::class ? $retryAfter : null, $rawBody);
    }

    /**
     * The error for a response that is not the contract's error JSON: 5xx
     * bodies from proxies and load balancers are not assumed to be JSON.
     */
    public static function fromStatus(int $status, string $rawBody, ?int $retryAfter = null): self
    {
        [$code, $message] = match (true) {
            $status === 401 => ['invalid_app_key', 'Invalid app_key'],
            $status === 403 => ['forbidden', 'Forbidden'],
            $status === 413 => ['payload_too_large', 'Request body too large'],
            $status === 429 => ['rate_limited', 'Rate limit exceeded'],
            $status >= 400 && $status < 500 => ['invalid_request', "Unexpected HTTP {$status} response"],
            $status >= 500 => ['server_error', "Server error: HTTP {$status}"],
            default => ['server_error', "Unexpected HTTP {$status} response"],
        };

        return self::fromApi($code, $message, $status, $retryAfter, $rawBody === '' ? null : $rawBody);
    }
}
