"""JWT verification (and HS* issuing for tools and tests) on top of PyJWT.

Domain-free: the caller passes the allow-list and keys from its settings. Every refusal is an
``InvalidToken`` whose ``reason`` is a short, fixed vocabulary word that is safe to log.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast, get_args

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

__all__ = ["MAX_TOKEN_BYTES", "Claims", "InvalidToken", "TokenVerifier", "UserType"]

UserType = Literal["seeker", "provider", "service"]
USER_TYPES: Final[frozenset[str]] = frozenset(get_args(UserType))

MAX_TOKEN_BYTES: Final = 8192
MAX_SUB_CHARS: Final = 64

# Claims written by issue() itself; letting `extra` override them would mint tokens that say
# something other than what the caller asked for.
_RESERVED_CLAIMS: Final = frozenset({"sub", "user_type", "exp", "iat", "nbf", "iss", "aud"})
_PUBLIC_KEY_TYPES: Final = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)
_SSH_KEY_PREFIXES: Final = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")


class InvalidToken(Exception):
    """A token was refused. ``reason`` never contains the token or any part of it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    user_type: UserType
    exp: datetime


def _is_number(value: object) -> bool:
    # bool is an int subclass, and PyJWT's own checks coerce with int(), which would let
    # `true` or "9999999999" through as a timestamp. Python's json accepts NaN and Infinity,
    # and NaN compares false with everything, so it would never expire.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _looks_like_public_key(secret: str) -> bool:
    text = secret.strip()
    return "-----BEGIN" in text or text.startswith(_SSH_KEY_PREFIXES)


class TokenVerifier:
    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        hmac_secret: str | None,
        public_key: str | None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 0,
        service_domain: TokenVerifier | None = None,
    ) -> None:
        """``service_domain``: the verifier of ``service`` tokens when they are a trust domain
        of their own. A token that says ``user_type: service`` is then checked by it alone,
        and every other token by this verifier alone, so a participant key cannot sign a
        service token and a service key cannot sign a participant one."""
        # A bare string is a Sequence[str] too: "HS256" would silently become ["H", "S", ...].
        if isinstance(algorithms, str):
            raise ValueError("algorithms must be a list of names, not a string")
        if any(not isinstance(name, str) for name in algorithms):
            raise ValueError("algorithm names must be strings")
        names = tuple(dict.fromkeys(algorithms))
        if not names:
            raise ValueError("the JWT algorithm allow-list is empty")
        if not math.isfinite(leeway_s) or leeway_s < 0:
            raise ValueError("leeway_s must be a finite number >= 0")

        hmac_algs: list[str] = []
        asym_algs: list[str] = []
        for name in names:
            if name.strip().lower() == "none":
                raise ValueError("the 'none' algorithm is never accepted")
            try:
                alg_obj = jwt.get_algorithm_by_name(name)
            except NotImplementedError:
                raise ValueError(f"unknown JWT algorithm {name!r}") from None
            (hmac_algs if isinstance(alg_obj, HMACAlgorithm) else asym_algs).append(name)

        secret = hmac_secret or None
        # Refused even when no HS* algorithm is allowed: a public key in the secret setting is a
        # misconfiguration that turns into a forgery hole the day HS256 is added to the list.
        if secret is not None and (
            _looks_like_public_key(secret) or (public_key and secret.strip() == public_key.strip())
        ):
            raise ValueError("hmac_secret looks like a public key; refusing (algorithm confusion)")
        if hmac_algs and secret is None:
            raise ValueError(f"{hmac_algs[0]} needs an HMAC secret")
        hmac_key: bytes | None = None
        if hmac_algs and secret is not None:
            try:
                # PyJWT's own refusal of PEM/SSH/DER keys as HMAC secrets, as a second net.
                hmac_key = jwt.get_algorithm_by_name(hmac_algs[0]).prepare_key(secret)
            except jwt.InvalidKeyError:
                raise ValueError("hmac_secret is not usable as an HMAC secret") from None

        verifying_key: Any = None
        if asym_algs:
            if not public_key:
                raise ValueError(f"{asym_algs[0]} needs a public key")
            for name in asym_algs:
                try:
                    # Every allowed asymmetric algorithm must accept the one configured key, so
                    # a mismatch (RS256 next to ES256, a P-384 key for ES256) fails at startup.
                    prepared = jwt.get_algorithm_by_name(name).prepare_key(public_key)
                except (jwt.InvalidKeyError, UnsupportedAlgorithm, ValueError, TypeError):
                    raise ValueError(f"public_key is not a valid key for {name}") from None
                if not isinstance(prepared, _PUBLIC_KEY_TYPES):
                    raise ValueError("public_key must be a public key, not a private key")
                verifying_key = prepared

        self._hmac_algs: tuple[str, ...] = tuple(hmac_algs)
        self._asym_algs: tuple[str, ...] = tuple(asym_algs)
        self._allowed: frozenset[str] = frozenset(names)
        self._hmac_key = hmac_key
        self._verifying_key = verifying_key
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = float(leeway_s)
        self._service_domain = service_domain

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._hmac_algs + self._asym_algs

    def verify(self, token: str, *, now: datetime | None = None) -> Claims:
        """Check signature and claims; raise ``InvalidToken`` on any doubt."""
        if self._service_domain is not None and _claims_service(token):
            claims = self._service_domain.verify(token, now=now)
            if claims.user_type != "service":
                raise InvalidToken("wrong_domain")
            return claims
        claims = self._verify_here(token, now=now)
        if self._service_domain is not None and claims.user_type == "service":
            # Unreachable while both read the same JSON the same way; kept so that a parser
            # difference can never let a participant key open the internal API.
            raise InvalidToken("wrong_domain")
        return claims

    def _verify_here(self, token: str, *, now: datetime | None) -> Claims:
        if not isinstance(token, str):
            raise InvalidToken("malformed")
        # Before any decoding, so a huge token costs nothing but this comparison.
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too_large")
        if not token.isascii():
            raise InvalidToken("malformed")
        if token.count(".") != 2:
            raise InvalidToken("malformed")

        # The header is read unverified only to pick which configured key to use. kid, jku,
        # x5u, jwk and x5c are deliberately never looked at: the key comes from configuration.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise InvalidToken("algorithm_not_allowed")

        # Choosing the key by the algorithm's family (never handing the public key to HMAC) is
        # what defeats HS/RS confusion when both families are allowed.
        key: Any
        if alg in self._hmac_algs:
            key, family = self._hmac_key, self._hmac_algs
        else:
            key, family = self._verifying_key, self._asym_algs

        require = ["exp", "sub", "user_type"]
        if self._issuer is not None:
            require.append("iss")
        if self._audience is not None:
            require.append("aud")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(family),
                options={
                    "verify_signature": True,
                    "require": require,
                    # Time claims are checked below with strict types; PyJWT coerces with
                    # int(), which accepts strings and booleans and truncates floats.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": self._issuer is not None,
                    # Without a configured audience an `aud` in the token is not ours to judge;
                    # PyJWT would otherwise refuse every token that carries one.
                    "verify_aud": self._audience is not None,
                    "verify_sub": True,
                    "verify_jti": True,
                },
                issuer=self._issuer,
                audience=self._audience,
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad_signature") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("algorithm_not_allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"missing_claim:{exc.claim}") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("bad_claim:iss") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("bad_claim:aud") from None
        except InvalidSubjectError:
            raise InvalidToken("bad_claim:sub") from None
        except InvalidJTIError:
            raise InvalidToken("bad_claim:jti") from None
        except jwt.InvalidKeyError:
            # Keys were validated at construction; a key PyJWT still rejects cannot verify.
            raise InvalidToken("bad_signature") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed") from None

        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        return self._check_claims(payload, now.timestamp())

    def _check_claims(self, payload: dict[str, Any], now: float) -> Claims:
        for claim in ("exp", "nbf", "iat"):
            if claim in payload and not _is_number(payload[claim]):
                raise InvalidToken(f"bad_claim:{claim}")
        try:
            exp = datetime.fromtimestamp(payload["exp"], UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidToken("bad_claim:exp") from None

        # Same boundaries as PyJWT: expired at exp itself, valid from nbf itself. A future iat
        # is tolerated (only its type is checked): it says the issuer's clock runs ahead.
        if payload["exp"] <= now - self._leeway_s:
            raise InvalidToken("expired")
        if "nbf" in payload and payload["nbf"] > now + self._leeway_s:
            raise InvalidToken("not_yet_valid")

        sub = payload["sub"]
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_CHARS or _has_control(sub):
            raise InvalidToken("bad_claim:sub")
        user_type = payload["user_type"]
        if not isinstance(user_type, str) or user_type not in USER_TYPES:
            raise InvalidToken("bad_claim:user_type")
        return Claims(sub=sub, user_type=cast(UserType, user_type), exp=exp)

    def issue(
        self,
        *,
        sub: str,
        user_type: UserType,
        ttl_s: float = 3600,
        now: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a token with the first HS* algorithm of the allow-list (CLI and tests only),
        with the service domain's key for a ``service`` token when there is one.

        A ``ttl_s`` of zero or less gives an already expired token, which tests need.
        """
        if user_type == "service" and self._service_domain is not None:
            return self._service_domain.issue(
                sub=sub, user_type=user_type, ttl_s=ttl_s, now=now, extra=extra
            )
        if not self._hmac_algs or self._hmac_key is None:
            raise ValueError("issuing needs an HS* algorithm and an HMAC secret")
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_CHARS:
            raise ValueError(f"sub must be a string of 1..{MAX_SUB_CHARS} characters")
        if user_type not in USER_TYPES:
            raise ValueError(f"user_type must be one of {sorted(USER_TYPES)}")
        if not math.isfinite(ttl_s):
            raise ValueError("ttl_s must be finite")
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        clash = _RESERVED_CLAIMS.intersection(extra or {})
        if clash:
            raise ValueError(f"extra may not set {sorted(clash)}")

        issued_at = now.timestamp()
        payload: dict[str, Any] = dict(extra or {})
        payload.update(
            sub=sub,
            user_type=user_type,
            iat=int(issued_at),
            exp=int(issued_at + ttl_s),
        )
        if self._issuer is not None:
            payload["iss"] = self._issuer
        if self._audience is not None:
            payload["aud"] = self._audience
        return jwt.encode(payload, self._hmac_key, algorithm=self._hmac_algs[0])


def _claims_service(token: object) -> bool:
    """Whether the (unverified) payload says ``user_type: service``: it picks the key to
    verify with, and the verification that follows checks the very same claim."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not token.isascii():
        return False
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(payload, dict) and payload.get("user_type") == "service"


def _has_control(text: str) -> bool:
    # A user id ends up in text columns, and PostgreSQL cannot store a NUL at all.
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
