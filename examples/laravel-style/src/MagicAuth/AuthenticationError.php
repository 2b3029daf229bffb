<?php

declare(strict_types=1);

namespace MagicAuth;

/** `invalid_app_key`: the app key is unknown or was rotated away. */
class AuthenticationError extends MagicAuthError
{
}
