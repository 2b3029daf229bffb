<?php

declare(strict_types=1);

namespace MagicAuth;

/** The result of {@see Client::verifyToken()}. */
final readonly class Verification
{
    public function __construct(
        public User $user,
        /** The session JWT (EdDSA) the server issued: a bearer credential. */
        public string $token,
        /** The redirect URL the link was sent to. */
        public string $redirectUrl,
    ) {
    }

    /** Dumps show the user, not the session JWT (it is a credential). */
    public function __debugInfo(): array
    {
        return [
            'user' => $this->user,
            'token' => '[session JWT, ' . strlen($this->token) . ' characters]',
            'redirectUrl' => $this->redirectUrl,
        ];
    }
}
