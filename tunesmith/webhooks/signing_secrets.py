"""Webhook signing secrets: made here, shown once, stored sealed.

The sender needs the secret itself to compute an HMAC, so it cannot be stored hashed as API
keys are. With `TUNESMITH_WEBHOOK_SECRET_KEY` (a Fernet key kept out of the database) it is
encrypted at rest, and a copy of the database alone cannot sign; without one it is stored as
it is, as safe as the database.
"""

import base64
import secrets

from cryptography.fernet import Fernet

from tunesmith.settings import settings

PREFIX = "whsec_"
SEALED = "fernet:"


def new_secret() -> str:
    """24 random bytes in the Standard Webhooks form, `whsec_` + base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def seal(secret: str) -> str:
    if not settings.webhook_secret_key:
        return secret
    return SEALED + Fernet(settings.webhook_secret_key.encode()).encrypt(secret.encode()).decode()


def unseal(stored: str) -> str:
    if not stored.startswith(SEALED):
        return stored
    if not settings.webhook_secret_key:
        raise RuntimeError("a webhook secret is encrypted but TUNESMITH_WEBHOOK_SECRET_KEY "
                           "is not set on this API")
    token = stored.removeprefix(SEALED).encode()
    return Fernet(settings.webhook_secret_key.encode()).decrypt(token).decode()
