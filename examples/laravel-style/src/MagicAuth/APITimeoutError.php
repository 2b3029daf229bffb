<?php

declare(strict_types=1);

namespace MagicAuth;

/** `timeout`: no answer within the client's timeout. */
class APITimeoutError extends MagicAuthError
{
}
