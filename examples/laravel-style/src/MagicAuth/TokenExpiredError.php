<?php

declare(strict_types=1);

namespace MagicAuth;

/** `token_expired`: the link is older than its app's token lifetime. */
class TokenExpiredError extends MagicAuthError
{
}
