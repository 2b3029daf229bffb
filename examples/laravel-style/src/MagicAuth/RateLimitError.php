<?php

declare(strict_types=1);

namespace MagicAuth;

/** `rate_limited` or `quota_exceeded`; `$retryAfter` carries the server's `Retry-After` in seconds. */
class RateLimitError extends MagicAuthError
{
}
