<?php

declare(strict_types=1);

namespace MagicAuth;

/** `internal_error`, or any other 5xx / unexpected response (`server_error`). */
class ServerError extends MagicAuthError
{
}
