<?php

declare(strict_types=1);

namespace MagicAuth;

/** `token_used`: the link was verified before (each link works once). */
class TokenAlreadyUsedError extends MagicAuthError
{
}
