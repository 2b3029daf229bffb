<?php

declare(strict_types=1);

namespace MagicAuth;

use DateTimeImmutable;

/** The user a magic link signed in. Users belong to an app. */
final readonly class User
{
    public function __construct(
        public int $id,
        public string $email,
        public ?string $name,
        /** First successful verification; never changes afterwards. */
        public DateTimeImmutable $emailVerifiedAt,
        /** This verification. */
        public DateTimeImmutable $lastLoginAt,
    ) {
    }
}
