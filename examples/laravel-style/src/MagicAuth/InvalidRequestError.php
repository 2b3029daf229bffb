<?php

declare(strict_types=1);

namespace MagicAuth;

/** `invalid_request` or `payload_too_large`: a missing or malformed field, a bad email or URL. */
class InvalidRequestError extends MagicAuthError
{
}
