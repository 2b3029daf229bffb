<?php

declare(strict_types=1);

namespace MagicAuth;

use CurlHandle;
use DateTimeImmutable;
use DateTimeZone;
use JsonException;
use SensitiveParameter;
use WeakMap;

/**
 * A MagicAuth API client built on PHP's curl and json extensions only.
 *
 * ```php
 * $magic = new Client();   // MAGICAUTH_APP_KEY, MAGICAUTH_BASE_URL
 * $magic->sendLink('user@example.com', 'https://yourapp.com/auth/callback');
 * $verification = $magic->verifyToken($token);   // in POST /auth/callback
 * ```
 *
 * Every call is retried on connection errors and timeouts, 429 (waiting
 * `Retry-After` when it is 30 s or less) and 500/502/503/504, with
 * exponential backoff and full jitter from 250 ms; every attempt of one call
 * carries the same `Idempotency-Key`, so a retried send never sends twice and
 * a retried verify never turns into "token already used".
 *
 * The client reuses one curl handle (and so its connections) across calls.
 * Share one instance per process or request; it is not meant for concurrent
 * use from several threads.
 */
final class Client
{
    public const DEFAULT_BASE_URL = 'https://magicauth.app/api';
    public const VERSION = '0.1.0';

    private const BASE_DELAY = 0.25;
    private const MAX_DELAY = 8.0;
    private const MAX_RETRY_AFTER = 30;
    private const RETRIED_STATUSES = [500, 502, 503, 504];
    private const MAX_RAW_BODY = 2000;

    /**
     * App keys live here, outside the objects' properties, so that no dump of
     * a client shows one: not var_dump/print_r (there is also __debugInfo),
     * and not var_export, `(array)` casts or Symfony's dump()/dd(), which read
     * properties directly. An entry goes away with its client.
     *
     * @var WeakMap<self, string>|null
     */
    private static ?WeakMap $appKeys = null;

    public readonly string $baseUrl;
    private ?CurlHandle $curl = null;

    /**
     * @param string|null $appKey  default: MAGICAUTH_APP_KEY
     * @param string|null $baseUrl default: MAGICAUTH_BASE_URL, else https://magicauth.app/api
     * @param float       $timeout seconds per attempt (connect and answer)
     * @param int         $maxRetries retries after the first attempt
     *
     * @throws ConfigurationError without an app key, or with a base URL that is not http(s)
     */
    public function __construct(
        #[SensitiveParameter] ?string $appKey = null,
        ?string $baseUrl = null,
        public readonly float $timeout = 10.0,
        public readonly int $maxRetries = 2,
    ) {
        $appKey = trim($appKey ?? self::env('MAGICAUTH_APP_KEY') ?? '');
        if ($appKey === '') {
            throw new ConfigurationError('no app key: pass one or set MAGICAUTH_APP_KEY', 'configuration');
        }
        $baseUrl = rtrim(trim($baseUrl ?? self::env('MAGICAUTH_BASE_URL') ?? self::DEFAULT_BASE_URL), '/');
        $parts = parse_url($baseUrl);
        if (
            !is_array($parts)
            || !in_array(strtolower($parts['scheme'] ?? ''), ['http', 'https'], true)
            || ($parts['host'] ?? '') === ''
        ) {
            // The URL itself is not repeated: it might hold credentials.
            throw new ConfigurationError('the base URL must be an absolute http(s) URL', 'configuration');
        }
        if (!is_finite($timeout) || $timeout <= 0) {
            throw new ConfigurationError('the timeout must be a positive number of seconds', 'configuration');
        }
        if ($maxRetries < 0) {
            throw new ConfigurationError('maxRetries must be 0 or more', 'configuration');
        }
        $this->baseUrl = $baseUrl;
        self::$appKeys ??= new WeakMap();
        self::$appKeys[$this] = $appKey;
    }

    /**
     * Emails a magic link to `$email`. Without `$redirectUrl` the app's first
     * allowed redirect URL is used; the link is that URL plus `magic_token=…`.
     *
     * @throws InvalidRequestError   bad email or URL
     * @throws PermissionDeniedError app disabled, or redirect URL not allowed
     * @throws RateLimitError        burst limit or monthly quota
     * @throws MagicAuthError        any other failure
     */
    public function sendLink(string $email, ?string $redirectUrl = null): SendLinkResponse
    {
        $fields = ['email' => $email];
        if ($redirectUrl !== null) {
            $fields['redirect_url'] = $redirectUrl;
        }
        $data = $this->post('send-link', $fields);
        $expiresIn = $data['expires_in'] ?? null;
        if (!is_int($expiresIn) || $expiresIn < 0) {
            throw self::unexpected('send-link answer without a valid expires_in');
        }

        return new SendLinkResponse($expiresIn);
    }

    /**
     * Verifies (and so consumes) a magic token. Call it from a POST handler,
     * never from the GET that opens the link: see README.md.
     *
     * @throws InvalidTokenError     unknown, malformed, or another app's token
     * @throws TokenAlreadyUsedError the link was used before
     * @throws TokenExpiredError     the link is too old
     * @throws MagicAuthError        any other failure
     */
    public function verifyToken(#[SensitiveParameter] string $token): Verification
    {
        $data = $this->post('verify-token', ['token' => $token]);
        $user = $data['user'] ?? null;
        if (!is_array($user)) {
            throw self::unexpected('verify-token answer without a user');
        }
        $id = $user['id'] ?? null;
        $email = $user['email'] ?? null;
        $name = $user['name'] ?? null;
        $session = $data['token'] ?? null;
        $redirectUrl = $data['redirect_url'] ?? null;
        if (
            !is_int($id) || $id <= 0 || !is_string($email) || ($name !== null && !is_string($name))
            || !is_string($session) || !is_string($redirectUrl)
        ) {
            throw self::unexpected('verify-token answer with missing or mistyped fields');
        }

        return new Verification(
            new User(
                $id,
                $email,
                $name,
                self::timestamp($user['email_verified_at'] ?? null),
                self::timestamp($user['last_login_at'] ?? null),
            ),
            $session,
            $redirectUrl,
        );
    }

    /**
     * The `magic_token` parameter of a callback URL, a path with a query, or
     * a query string (with or without `?`); null when there is none or it is
     * empty. Fragments are ignored.
     */
    public static function tokenFromUrl(#[SensitiveParameter] string $urlOrQuery): ?string
    {
        $input = explode('#', trim($urlOrQuery), 2)[0];
        $question = strpos($input, '?');
        if ($question !== false) {
            $query = substr($input, $question + 1);
        } elseif (preg_match('~^[a-z][a-z0-9+.-]*:~i', $input) === 1) {
            return null; // an absolute URL without a query
        } else {
            $query = $input;
        }
        foreach (explode('&', $query) as $pair) {
            [$key, $value] = array_pad(explode('=', $pair, 2), 2, '');
            if (urldecode($key) === 'magic_token') {
                $value = trim(urldecode($value));

                return $value === '' ? null : $value;
            }
        }

        return null;
    }

    /** Dumps show the configuration, never the app key. */
    public function __debugInfo(): array
    {
        return [
            'appKey' => '[redacted]',
            'baseUrl' => $this->baseUrl,
            'timeout' => $this->timeout,
            'maxRetries' => $this->maxRetries,
        ];
    }

    /** A client holds a secret and a connection: share it, don't copy it. */
    public function __clone()
    {
        throw new \LogicException('a MagicAuth\Client cannot be cloned; share the instance or create a new one');
    }

    public function __serialize(): array
    {
        throw new \LogicException('a MagicAuth\Client cannot be serialized');
    }

    public function __unserialize(array $data): void
    {
        throw new \LogicException('a MagicAuth\Client cannot be unserialized');
    }

    // -- HTTP ---------------------------------------------------------------

    /**
     * POSTs `$fields` plus the app key as JSON, with retries; returns the
     * decoded 2xx body.
     *
     * @param array<string, string> $fields
     * @return array<mixed>
     */
    private function post(string $path, #[SensitiveParameter] array $fields): array
    {
        $fields['app_key'] = $this->appKey();
        try {
            $body = json_encode($fields, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        } catch (JsonException) {
            throw new InvalidRequestError('the request could not be encoded as JSON (invalid UTF-8?)', 'invalid_request');
        }
        $url = $this->baseUrl . '/' . $path;
        // One key for every attempt of this call, so a retry is never a second send.
        $idempotencyKey = rtrim(strtr(base64_encode(random_bytes(16)), '+/', '-_'), '=');
        for ($attempt = 0;; $attempt++) {
            try {
                return $this->attempt($url, $body, $idempotencyKey);
            } catch (MagicAuthError $error) {
                $delay = $this->retryDelay($error, $attempt);
                if ($delay === null) {
                    throw $error;
                }
                usleep((int) round($delay * 1_000_000));
            }
        }
    }

    /** @return array<mixed> */
    private function attempt(string $url, #[SensitiveParameter] string $body, string $idempotencyKey): array
    {
        $curl = $this->curl ??= curl_init();
        curl_reset($curl); // keeps the connection cache
        $headers = [];
        $timeoutMs = max(1, (int) ceil($this->timeout * 1000));
        curl_setopt_array($curl, [
            CURLOPT_URL => $url,
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => [
                'Content-Type: application/json',
                'Accept: application/json',
                'Idempotency-Key: ' . $idempotencyKey,
                'Expect:',
            ],
            CURLOPT_USERAGENT => 'magicauth-php/' . self::VERSION . ' curl/' . (curl_version()['version'] ?? '?'),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT_MS => $timeoutMs,
            CURLOPT_TIMEOUT_MS => $timeoutMs,
            CURLOPT_NOSIGNAL => true,
            CURLOPT_ENCODING => '',
            CURLOPT_HEADERFUNCTION => static function (CurlHandle $_, string $line) use (&$headers): int {
                if (str_starts_with($line, 'HTTP/')) {
                    $headers = []; // a new response (after 100 Continue, say)
                } elseif (str_contains($line, ':')) {
                    [$name, $value] = explode(':', $line, 2);
                    $headers[strtolower(trim($name))] = trim($value);
                }

                return strlen($line);
            },
        ]);
        $raw = curl_exec($curl);
        if (!is_string($raw)) {
            if (curl_errno($curl) === CURLE_OPERATION_TIMEDOUT) {
                throw new APITimeoutError(sprintf('no answer within %g s', $this->timeout), 'timeout');
            }
            throw new APIConnectionError(
                'could not reach the MagicAuth server: ' . $this->redact(curl_error($curl)),
                'connection',
            );
        }
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        try {
            $decoded = json_decode($raw, true, 64, JSON_THROW_ON_ERROR);
        } catch (JsonException) {
            $decoded = null;
        }
        if ($status >= 200 && $status < 300) {
            if (!is_array($decoded)) {
                throw self::unexpected('the answer is not a JSON object', $status, $this->rawBody($raw));
            }

            return $decoded;
        }
        $retryAfter = self::retryAfter($headers['retry-after'] ?? null);
        if (is_array($decoded) && is_string($decoded['code'] ?? null) && is_string($decoded['error'] ?? null)) {
            throw MagicAuthError::fromApi($decoded['code'], $this->redact($decoded['error']), $status, $retryAfter);
        }

        throw MagicAuthError::fromStatus($status, $this->rawBody($raw), $retryAfter);
    }

    /** Seconds to wait before retrying after `$error` on attempt `$attempt` (0-based), or null when final. */
    private function retryDelay(MagicAuthError $error, int $attempt): ?float
    {
        if ($attempt >= $this->maxRetries) {
            return null;
        }
        if ($error instanceof APIConnectionError || $error instanceof APITimeoutError) {
            return $this->backoff($attempt);
        }
        if ($error instanceof ServerError && in_array($error->status, self::RETRIED_STATUSES, true)) {
            return $this->backoff($attempt);
        }
        if ($error instanceof RateLimitError) {
            // A used-up monthly quota does not come back within a retry.
            if ($error->errorCode === 'quota_exceeded') {
                return null;
            }
            if ($error->retryAfter === null) {
                return $this->backoff($attempt);
            }

            return $error->retryAfter > self::MAX_RETRY_AFTER ? null : (float) $error->retryAfter;
        }

        return null;
    }

    /** Full jitter: uniform in [0, min(8 s, 250 ms * 2^attempt)]. */
    private function backoff(int $attempt): float
    {
        $ceiling = min(self::MAX_DELAY, self::BASE_DELAY * 2 ** min($attempt, 16));

        return $ceiling * random_int(0, 1_000_000) / 1_000_000;
    }

    /** `Retry-After` as delta-seconds or an HTTP date; null when absent or unreadable. */
    private static function retryAfter(?string $value): ?int
    {
        $value = trim($value ?? '');
        if ($value === '') {
            return null;
        }
        if (ctype_digit($value)) {
            return strlen($value) > 9 ? 999_999_999 : (int) $value;
        }
        $at = DateTimeImmutable::createFromFormat(DATE_RFC7231, $value, new DateTimeZone('UTC'));

        return $at === false ? null : max(0, $at->getTimestamp() - time());
    }

    private function rawBody(string $raw): string
    {
        return $this->redact(substr($raw, 0, self::MAX_RAW_BODY));
    }

    /** Defence in depth: text from the network or curl never carries the key out. */
    private function redact(string $text): string
    {
        return str_replace($this->appKey(), '[redacted]', $text);
    }

    private function appKey(): string
    {
        return self::$appKeys[$this] ?? throw new ConfigurationError('this client has no app key', 'configuration');
    }

    private static function env(string $name): ?string
    {
        $value = getenv($name);

        return is_string($value) && trim($value) !== '' ? $value : null;
    }

    private static function timestamp(mixed $value): DateTimeImmutable
    {
        // RFC 3339 with a `Z` or an offset; fractions beyond microseconds are cut.
        $pattern = '/^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/';
        if (!is_string($value) || preg_match($pattern, $value, $m) !== 1) {
            throw self::unexpected('verify-token answer with a malformed timestamp');
        }
        $fraction = substr(str_pad($m[3], 6, '0'), 0, 6);
        $offset = strtoupper($m[4]) === 'Z' ? '+00:00' : $m[4];
        $at = DateTimeImmutable::createFromFormat('Y-m-d H:i:s.uP', "{$m[1]} {$m[2]}.{$fraction}{$offset}");
        if ($at === false) {
            throw self::unexpected('verify-token answer with an invalid timestamp');
        }

        return $at->setTimezone(new DateTimeZone('UTC'));
    }

    private static function unexpected(string $what, ?int $status = null, ?string $rawBody = null): ServerError
    {
        return new ServerError('unexpected response from the server: ' . $what, 'server_error', $status, null, $rawBody);
    }
}
