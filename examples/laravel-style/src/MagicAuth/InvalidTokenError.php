<?php

declare(strict_types=1);

namespace MagicAuth;

/** `invalid_token`: the token is unknown, malformed, or was issued for another app. */
class InvalidTokenError extends MagicAuthError
{
}
