<?php

declare(strict_types=1);

namespace MagicAuth;

/** `connection`: the server could not be reached, or the connection broke. */
class APIConnectionError extends MagicAuthError
{
}
