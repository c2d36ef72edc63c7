"""JWTs from the app's own identity provider: HS256 with a shared secret, or RS256/ES256
with keys from a JWKS URL (fetched and cached by PyJWT's PyJWKClient).

`iss`, `aud`, `exp` and `sub` are required and checked; `sub` becomes the end user.

PyJWT (and the `cryptography` it loads for RS256/ES256) is imported only when a verifier
is built, i.e. when JWT auth is configured: otherwise it would keep ~9 MB resident in every
service process for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.config import JwtSettings
from app.core.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from jwt import PyJWKClient

logger = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]


@dataclass(frozen=True)
class VerifiedJwt:
    subject: str
    claims: dict[str, Any]


def looks_like_jwt(value: str) -> bool:
    """A compact JWS: three base64url parts, the header starting `eyJ` (`{"`)."""
    return value.startswith("eyJ") and value.count(".") == 2


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        import jwt

        self._jwt = jwt
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.leeway = settings.leeway_s
        self._secret = settings.hs256_secret.get_secret_value() if settings.hs256_secret else None
        self._jwks: PyJWKClient | None = None
        if settings.jwks_url:
            self._jwks = jwt.PyJWKClient(
                settings.jwks_url,
                cache_jwk_set=True,
                lifespan=settings.jwks_cache_ttl_s,
                cache_keys=True,
                timeout=5,
            )

    async def _key(self, token: str) -> tuple[Any, list[str]]:
        jwt = self._jwt
        if self._secret is not None:
            return self._secret, ["HS256"]
        assert self._jwks is not None
        try:
            # PyJWKClient fetches with urllib (blocking): keep the event loop free. Once the
            # set is cached this is a dictionary lookup.
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            logger.error("sessions.jwks.unreachable", extra={"error_type": type(exc).__name__})
            raise ServiceUnavailable(
                "The identity provider's signing keys could not be fetched; retry shortly."
            ) from exc
        except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.DecodeError) as exc:
            raise Unauthorized(f"Invalid token: {exc}") from exc
        return signing_key.key, ASYMMETRIC_ALGORITHMS

    async def verify(self, token: str) -> VerifiedJwt:
        jwt = self._jwt
        key, algorithms = await self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Invalid token: the token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("Invalid token: wrong audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("Invalid token: wrong issuer.") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("Invalid token: the signature does not verify.") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"Invalid token: {exc}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 200:
            raise Unauthorized("Invalid token: `sub` must be a non-empty string.")
        return VerifiedJwt(subject=subject, claims=claims)
