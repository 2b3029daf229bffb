<?php

declare(strict_types=1);

namespace MagicAuth;

/** The answer to {@see Client::sendLink()}: the link was queued for delivery. */
final readonly class SendLinkResponse
{
    public function __construct(
        /** Seconds until the emailed link expires. */
        public int $expiresIn,
    ) {
    }
}
