<?php

declare(strict_types=1);

namespace MagicAuth;

/** `configuration`: the client is not set up correctly (no app key, bad base URL). */
class ConfigurationError extends MagicAuthError
{
}
