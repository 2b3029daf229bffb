<?php

declare(strict_types=1);

namespace MagicAuth;

/** `app_disabled` or `redirect_not_allowed` (`forbidden` for a 403 that was not the contract's JSON). */
class PermissionDeniedError extends MagicAuthError
{
}
