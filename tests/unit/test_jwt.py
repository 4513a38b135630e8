"""TokenVerifier: a hostile corpus for each key family, construction guards, and issue()."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from worksession.kit.jwt import MAX_TOKEN_BYTES, Claims, InvalidToken, TokenVerifier

# 64 bytes so that HS512 is not below PyJWT's minimum key length (a warning, an error here).
SECRET = "our-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNO"
ATTACKER_SECRET = "attacker-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQ"
ISS = "https://auth.example.test"
AUD = "worksession"
DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sub": "user-42",
        "user_type": "seeker",
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
        "iss": ISS,
        "aud": AUD,
    }
    for name, value in overrides.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def hs256_by_hand(payload: Any, key: bytes, header: Mapping[str, Any] | None = None) -> str:
    """HS256 signed without PyJWT, which refuses to HMAC with a PEM key."""
    signing_input = f"{b64json(dict(header or {'alg': 'HS256', 'typ': 'JWT'}))}.{b64json(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass(frozen=True)
class Family:
    alg: str
    verifier: TokenVerifier
    key: Any
    attacker_key: Any
    attacker_jwk: dict[str, Any]
    other_alg: str
    other_key: Any

    def sign(
        self,
        payload: Any,
        *,
        header: Mapping[str, Any] | None = None,
        raw_header: Mapping[str, Any] | None = None,
        key: Any = None,
        alg: str | None = None,
    ) -> str:
        alg = alg or self.alg
        hdr = dict(raw_header) if raw_header is not None else {"alg": alg, "typ": "JWT"}
        hdr.update(header or {})
        signing_input = f"{b64json(hdr)}.{b64json(payload)}"
        algorithm = jwt.get_algorithm_by_name(alg)
        prepared = algorithm.prepare_key(self.key if key is None else key)
        return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), prepared))}"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def families(rsa_key: rsa.RSAPrivateKey) -> dict[str, Family]:
    attacker_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    attacker_ec = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())

    def verifier(alg: str, **keys: Any) -> TokenVerifier:
        return TokenVerifier(algorithms=[alg], issuer=ISS, audience=AUD, **keys)

    return {
        "HS256": Family(
            alg="HS256",
            verifier=verifier("HS256", hmac_secret=SECRET, public_key=None),
            key=SECRET.encode(),
            attacker_key=ATTACKER_SECRET.encode(),
            attacker_jwk={"kty": "oct", "k": b64(ATTACKER_SECRET.encode())},
            other_alg="HS512",
            other_key=SECRET.encode(),
        ),
        "RS256": Family(
            alg="RS256",
            verifier=verifier("RS256", hmac_secret=None, public_key=pem(rsa_key)),
            key=rsa_key,
            attacker_key=attacker_rsa,
            attacker_jwk=RSAAlgorithm.to_jwk(attacker_rsa.public_key(), as_dict=True),
            other_alg="RS512",
            other_key=rsa_key,
        ),
        "ES256": Family(
            alg="ES256",
            verifier=verifier("ES256", hmac_secret=None, public_key=pem(ec_key)),
            key=ec_key,
            attacker_key=attacker_ec,
            attacker_jwk=ECAlgorithm.to_jwk(attacker_ec.public_key(), as_dict=True),
            other_alg="ES384",
            other_key=ec384,
        ),
    }


FAMILIES = ["HS256", "RS256", "ES256"]


def _unsigned(payload: Any, alg: str = "none", trailing_dot: bool = True) -> str:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}"
    return token + "." if trailing_dot else token


def _tampered_payload(f: Family) -> str:
    header, _, signature = f.sign(claims()).split(".")
    return f"{header}.{b64json(claims(user_type='service'))}.{signature}"


def _tampered_signature(f: Family) -> str:
    header, payload, signature = f.sign(claims()).split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def _alg_none_keeping_signature(f: Family) -> str:
    _, payload, signature = f.sign(claims()).split(".")
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"


def _oversized(f: Family) -> str:
    return f.sign(claims(pad="x" * MAX_TOKEN_BYTES))


HOSTILE: list[tuple[str, Callable[[Family], str], str]] = [
    # algorithm games
    ("alg-none-trailing-dot", lambda f: _unsigned(claims()), "algorithm_not_allowed"),
    ("alg-none-no-trailing-dot", lambda f: _unsigned(claims(), trailing_dot=False), "malformed"),
    ("alg-None-capitalised", lambda f: _unsigned(claims(), alg="None"), "algorithm_not_allowed"),
    ("alg-NONE-upper", lambda f: _unsigned(claims(), alg="NONE"), "algorithm_not_allowed"),
    ("alg-none-keeping-signature", _alg_none_keeping_signature, "algorithm_not_allowed"),
    (
        "alg-missing",
        lambda f: f.sign(claims(), raw_header={"typ": "JWT"}),
        "algorithm_not_allowed",
    ),
    ("alg-null", lambda f: f.sign(claims(), header={"alg": None}), "algorithm_not_allowed"),
    ("alg-list", lambda f: f.sign(claims(), header={"alg": [f.alg]}), "algorithm_not_allowed"),
    (
        "other-alg-same-family",
        lambda f: f.sign(claims(), alg=f.other_alg, key=f.other_key),
        "algorithm_not_allowed",
    ),
    # signatures
    ("wrong-key", lambda f: f.sign(claims(), key=f.attacker_key), "bad_signature"),
    ("tampered-payload", _tampered_payload, "bad_signature"),
    ("tampered-signature", _tampered_signature, "bad_signature"),
    (
        "header-jwk-attacker-key",
        lambda f: f.sign(claims(), header={"jwk": f.attacker_jwk}, key=f.attacker_key),
        "bad_signature",
    ),
    (
        "header-jku-x5u-attacker-url",
        lambda f: f.sign(
            claims(),
            header={"jku": "https://evil.test/jwks.json", "x5u": "https://evil.test/cert.pem"},
            key=f.attacker_key,
        ),
        "bad_signature",
    ),
    (
        "header-kid-path-traversal",
        lambda f: f.sign(claims(), header={"kid": "../../../../dev/null"}, key=f.attacker_key),
        "bad_signature",
    ),
    # exp
    ("expired", lambda f: f.sign(claims(exp=int(time.time()) - 60)), "expired"),
    ("exp-missing", lambda f: f.sign(claims(exp=DROP)), "missing_claim:exp"),
    ("exp-null", lambda f: f.sign(claims(exp=None)), "missing_claim:exp"),
    ("exp-string", lambda f: f.sign(claims(exp=str(int(time.time()) + 600))), "bad_claim:exp"),
    ("exp-bool", lambda f: f.sign(claims(exp=True)), "bad_claim:exp"),
    ("exp-nan", lambda f: f.sign(claims(exp=float("nan"))), "bad_claim:exp"),
    ("exp-infinity", lambda f: f.sign(claims(exp=float("inf"))), "bad_claim:exp"),
    ("exp-beyond-year-9999", lambda f: f.sign(claims(exp=10**30)), "bad_claim:exp"),
    # nbf / iat
    ("nbf-future", lambda f: f.sign(claims(nbf=int(time.time()) + 600)), "not_yet_valid"),
    ("nbf-string", lambda f: f.sign(claims(nbf="0")), "bad_claim:nbf"),
    ("iat-string", lambda f: f.sign(claims(iat="now")), "bad_claim:iat"),
    # iss / aud
    ("iss-wrong", lambda f: f.sign(claims(iss="https://evil.test")), "bad_claim:iss"),
    ("iss-missing", lambda f: f.sign(claims(iss=DROP)), "missing_claim:iss"),
    ("iss-not-a-string", lambda f: f.sign(claims(iss=[ISS])), "bad_claim:iss"),
    ("aud-wrong", lambda f: f.sign(claims(aud="someone-else")), "bad_claim:aud"),
    ("aud-missing", lambda f: f.sign(claims(aud=DROP)), "missing_claim:aud"),
    # sub / user_type / jti
    ("sub-missing", lambda f: f.sign(claims(sub=DROP)), "missing_claim:sub"),
    ("sub-empty", lambda f: f.sign(claims(sub="")), "bad_claim:sub"),
    ("sub-65-chars", lambda f: f.sign(claims(sub="u" * 65)), "bad_claim:sub"),
    ("sub-with-nul", lambda f: f.sign(claims(sub="a\x00b")), "bad_claim:sub"),
    ("sub-not-a-string", lambda f: f.sign(claims(sub=42)), "bad_claim:sub"),
    ("user-type-unknown", lambda f: f.sign(claims(user_type="admin")), "bad_claim:user_type"),
    ("user-type-missing", lambda f: f.sign(claims(user_type=DROP)), "missing_claim:user_type"),
    ("user-type-list", lambda f: f.sign(claims(user_type=["seeker"])), "bad_claim:user_type"),
    ("jti-not-a-string", lambda f: f.sign(claims(jti=7)), "bad_claim:jti"),
    # structure, signed with our own key
    ("payload-json-array", lambda f: f.sign([claims()]), "malformed"),
    ("kid-not-a-string", lambda f: f.sign(claims(), header={"kid": 7}), "malformed"),
    ("crit-unknown", lambda f: f.sign(claims(), header={"crit": ["exp-ext"]}), "malformed"),
    (
        "b64-false-detached",
        lambda f: f.sign(claims(), header={"b64": False, "crit": ["b64"]}),
        "malformed",
    ),
    ("oversized", _oversized, "too_large"),
]


def assert_refused(verifier: TokenVerifier, token: Any, reason: str) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    exc = info.value
    assert exc.reason == reason
    assert str(exc) == reason
    # The reason goes to logs: no token, no piece of one, no chained PyJWT message.
    if isinstance(token, str):
        for piece in [token, *token.split(".")]:
            if len(piece) > 3:
                assert piece not in exc.reason
                assert piece not in repr(exc)
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


@pytest.mark.parametrize("family", FAMILIES)
def test_good_token_is_accepted(families: dict[str, Family], family: str) -> None:
    f = families[family]
    exp = int(time.time()) + 600
    result = f.verifier.verify(f.sign(claims(exp=exp, user_type="provider")))
    assert result == Claims(
        sub="user-42", user_type="provider", exp=datetime.fromtimestamp(exp, UTC)
    )
    assert result.exp.tzinfo is UTC


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("build", "reason"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_token_is_refused(
    families: dict[str, Family], family: str, build: Callable[[Family], str], reason: str
) -> None:
    f = families[family]
    assert_refused(f.verifier, build(f), reason)


@pytest.mark.parametrize("family", FAMILIES)
def test_key_hint_headers_are_ignored_when_signed_with_our_key(
    families: dict[str, Family], family: str
) -> None:
    f = families[family]
    hints = {
        "kid": "../../../../etc/passwd",
        "jku": "https://evil.test/jwks.json",
        "x5u": "https://evil.test/cert.pem",
        "jwk": f.attacker_jwk,
    }
    assert f.verifier.verify(f.sign(claims(), header=hints)).sub == "user-42"


GARBAGE: list[tuple[str, Any, str]] = [
    ("empty", "", "malformed"),
    ("one-segment", "abc", "malformed"),
    ("two-segments", "a.b", "malformed"),
    ("three-junk-segments", "a.b.c", "malformed"),
    ("four-segments", "a.b.c.d", "malformed"),
    ("only-dots", "..", "malformed"),
    ("non-ascii", "é.é.é", "malformed"),
    ("non-ascii-payload", f"{b64json({'alg': 'HS256'})}.é.x", "malformed"),
    ("header-not-json", f"{b64(b'not json')}.{b64json({})}.sig", "malformed"),
    ("header-json-array", f"{b64json(['HS256'])}.{b64json({})}.sig", "malformed"),
    ("bearer-prefix", "Bearer a.b.c", "malformed"),
    ("none-value", None, "malformed"),
    ("bytes", b"a.b.c", "malformed"),
    ("int", 123, "malformed"),
    ("over-8-KiB-junk", "x" * (MAX_TOKEN_BYTES + 1), "too_large"),
    ("over-8-KiB-non-ascii", "é" * (MAX_TOKEN_BYTES + 1), "too_large"),
]


@pytest.mark.parametrize(("token", "reason"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_is_refused(families: dict[str, Family], token: Any, reason: str) -> None:
    assert_refused(families["HS256"].verifier, token, reason)


def test_whitespace_around_a_good_token_is_refused(families: dict[str, Family]) -> None:
    f = families["HS256"]
    assert_refused(f.verifier, " " + f.sign(claims()), "malformed")


def test_token_of_exactly_max_size_is_accepted(families: dict[str, Family]) -> None:
    f = families["HS256"]
    base = len(f.sign(claims(pad="")))
    # Base64 turns 3 bytes into 4 characters, so search a small window for an exact fit.
    pad_guess = (MAX_TOKEN_BYTES - base) * 3 // 4
    exact = next(
        (pad, sub)
        for pad in range(pad_guess - 8, pad_guess + 8)
        for sub in ("u", "uu", "uuu")
        if len(f.sign(claims(pad="x" * pad, sub=sub))) == MAX_TOKEN_BYTES
    )
    pad, sub = exact
    assert f.verifier.verify(f.sign(claims(pad="x" * pad, sub=sub))).sub == sub
    assert_refused(f.verifier, f.sign(claims(pad="x" * (pad + 1), sub=sub)), "too_large")


# --- algorithm confusion: the public key's text as an HMAC secret ---------------------------


def _pem_variants(rsa_key: rsa.RSAPrivateKey) -> list[bytes]:
    spki = pem(rsa_key).encode()
    pkcs1 = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    return [spki, spki.strip(), pkcs1]


@pytest.mark.parametrize(
    ("algorithms", "reason"),
    [
        (["RS256"], "algorithm_not_allowed"),
        (["RS256", "RS512"], "algorithm_not_allowed"),
        (["HS256", "RS256"], "bad_signature"),
        (["RS256", "HS256"], "bad_signature"),
    ],
    ids=["rs256-only", "rs-family-only", "hs-and-rs", "rs-and-hs"],
)
def test_public_key_as_hmac_secret_is_refused(
    rsa_key: rsa.RSAPrivateKey, algorithms: list[str], reason: str
) -> None:
    verifier = TokenVerifier(
        algorithms=algorithms,
        hmac_secret=SECRET if "HS256" in algorithms else None,
        public_key=pem(rsa_key),
    )
    for key_text in _pem_variants(rsa_key):
        forged = hs256_by_hand(claims(iss=DROP, aud=DROP), key_text)
        assert_refused(verifier, forged, reason)


def test_mixed_families_pick_the_key_by_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(
        algorithms=["HS256", "RS256"], hmac_secret=SECRET, public_key=pem(rsa_key)
    )
    payload = claims(iss=DROP, aud=DROP)
    assert verifier.verify(jwt.encode(payload, SECRET, algorithm="HS256")).sub == "user-42"
    assert verifier.verify(jwt.encode(payload, rsa_key, algorithm="RS256")).sub == "user-42"


# --- construction guards ----------------------------------------------------------------------


def test_construction_refuses_bad_configuration(rsa_key: rsa.RSAPrivateKey) -> None:
    rsa_pem = pem(rsa_key)
    ssh = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    p384_pem = pem(ec.generate_private_key(ec.SECP384R1()))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"algorithms": ["none"], "hmac_secret": SECRET}, "none"),
        ({"algorithms": ["HS256", "none"], "hmac_secret": SECRET}, "none"),
        ({"algorithms": ["None"], "hmac_secret": SECRET}, "none"),
        ({"algorithms": ["NONE"], "hmac_secret": SECRET}, "none"),
        ({"algorithms": "HS256", "hmac_secret": SECRET}, "not a string"),
        ({"algorithms": [], "hmac_secret": SECRET}, "empty"),
        ({"algorithms": ["HS999"], "hmac_secret": SECRET}, "unknown"),
        ({"algorithms": ["HS256"]}, "HMAC secret"),
        ({"algorithms": ["HS256"], "hmac_secret": ""}, "HMAC secret"),
        ({"algorithms": ["RS256"]}, "public key"),
        ({"algorithms": ["HS256"], "hmac_secret": rsa_pem}, "public key"),
        ({"algorithms": ["HS256"], "hmac_secret": "\n  " + rsa_pem}, "public key"),
        ({"algorithms": ["HS256"], "hmac_secret": ssh}, "public key"),
        ({"algorithms": ["RS256"], "hmac_secret": rsa_pem, "public_key": rsa_pem}, "public key"),
        ({"algorithms": ["RS256"], "public_key": "not a key"}, "valid key"),
        ({"algorithms": ["RS256", "ES256"], "public_key": rsa_pem}, "valid key for ES256"),
        ({"algorithms": ["ES256"], "public_key": p384_pem}, "valid key for ES256"),
        ({"algorithms": ["RS256"], "public_key": private_pem}, "private key"),
        ({"algorithms": ["HS256"], "hmac_secret": SECRET, "leeway_s": -1}, "leeway"),
    ]
    for kwargs, message in bad:
        kwargs.setdefault("hmac_secret", None)
        kwargs.setdefault("public_key", None)
        with pytest.raises(ValueError, match=message):
            TokenVerifier(**kwargs)


def test_unused_secret_does_not_block_an_asymmetric_verifier(rsa_key: rsa.RSAPrivateKey) -> None:
    # Settings always carry a secret (a dev default); an RS256-only deployment must still start.
    verifier = TokenVerifier(algorithms=["RS256"], hmac_secret=SECRET, public_key=pem(rsa_key))
    forged = jwt.encode(claims(iss=DROP, aud=DROP), SECRET, algorithm="HS256")
    assert_refused(verifier, forged, "algorithm_not_allowed")


# --- claims details -----------------------------------------------------------------------------


def test_aud_is_ignored_when_no_audience_is_configured() -> None:
    verifier = TokenVerifier(algorithms=["HS256"], hmac_secret=SECRET, public_key=None)
    for aud in ("someone-else", ["a", "b"]):
        token = jwt.encode(claims(aud=aud), SECRET, algorithm="HS256")
        assert verifier.verify(token).sub == "user-42"


def test_aud_list_containing_ours_is_accepted(families: dict[str, Family]) -> None:
    f = families["HS256"]
    assert f.verifier.verify(f.sign(claims(aud=["other", AUD]))).sub == "user-42"


def test_float_exp_and_future_iat_are_accepted(families: dict[str, Family]) -> None:
    f = families["HS256"]
    result = f.verifier.verify(f.sign(claims(exp=time.time() + 600.5, iat=time.time() + 30)))
    assert result.exp > datetime.now(UTC)


def test_expiry_boundaries_and_leeway() -> None:
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    ts = int(moment.timestamp())
    strict = TokenVerifier(algorithms=["HS256"], hmac_secret=SECRET, public_key=None)
    lenient = TokenVerifier(algorithms=["HS256"], hmac_secret=SECRET, public_key=None, leeway_s=10)

    def token(**overrides: Any) -> str:
        return jwt.encode(claims(iss=DROP, aud=DROP, **overrides), SECRET, algorithm="HS256")

    assert strict.verify(token(exp=ts + 1), now=moment).sub == "user-42"
    with pytest.raises(InvalidToken, match="expired"):
        strict.verify(token(exp=ts), now=moment)
    assert lenient.verify(token(exp=ts - 5), now=moment).sub == "user-42"
    with pytest.raises(InvalidToken, match="expired"):
        lenient.verify(token(exp=ts - 10), now=moment)

    assert strict.verify(token(exp=ts + 60, nbf=ts), now=moment).sub == "user-42"
    with pytest.raises(InvalidToken, match="not_yet_valid"):
        strict.verify(token(exp=ts + 60, nbf=ts + 1), now=moment)
    assert lenient.verify(token(exp=ts + 60, nbf=ts + 5), now=moment).sub == "user-42"


def test_verify_refuses_a_naive_now(families: dict[str, Family]) -> None:
    f = families["HS256"]
    with pytest.raises(ValueError, match="timezone-aware"):
        f.verifier.verify(f.sign(claims()), now=datetime(2030, 1, 1))


# --- issue() ------------------------------------------------------------------------------------


def test_issue_round_trips_through_verify(families: dict[str, Family]) -> None:
    verifier = families["HS256"].verifier
    now = datetime.now(UTC)
    token = verifier.issue(sub="prov-1", user_type="provider", ttl_s=120, now=now)
    result = verifier.verify(token)
    assert result == Claims(
        sub="prov-1",
        user_type="provider",
        exp=datetime.fromtimestamp(int(now.timestamp() + 120), UTC),
    )
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == ISS
    assert payload["aud"] == AUD
    assert isinstance(payload["iat"], int)


def test_issue_without_iss_aud_and_with_extra() -> None:
    verifier = TokenVerifier(algorithms=["HS512", "HS256"], hmac_secret=SECRET, public_key=None)
    token = verifier.issue(sub="svc", user_type="service", extra={"jti": "abc", "scope": "x"})
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert "iss" not in payload
    assert "aud" not in payload
    assert payload["jti"] == "abc"
    assert payload["scope"] == "x"
    assert verifier.verify(token).user_type == "service"


def test_issued_token_can_be_already_expired(families: dict[str, Family]) -> None:
    verifier = families["HS256"].verifier
    past = datetime.now(UTC) - timedelta(hours=2)
    assert_refused(verifier, verifier.issue(sub="s", user_type="seeker", now=past), "expired")
    assert_refused(verifier, verifier.issue(sub="s", user_type="seeker", ttl_s=-1), "expired")


def test_issue_refuses_what_verify_would_refuse(
    families: dict[str, Family], rsa_key: rsa.RSAPrivateKey
) -> None:
    hs = families["HS256"].verifier
    with pytest.raises(ValueError, match="HS"):
        families["RS256"].verifier.issue(sub="s", user_type="seeker")
    with pytest.raises(ValueError, match="sub"):
        hs.issue(sub="u" * 65, user_type="seeker")
    with pytest.raises(ValueError, match="sub"):
        hs.issue(sub="", user_type="seeker")
    with pytest.raises(ValueError, match="user_type"):
        hs.issue(sub="s", user_type="admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        hs.issue(sub="s", user_type="seeker", extra={"user_type": "service"})
    with pytest.raises(ValueError, match="timezone-aware"):
        hs.issue(sub="s", user_type="seeker", now=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        hs.issue(sub="s", user_type="seeker", ttl_s=float("inf"))


# --- service tokens as a trust domain of their own (PROTOCOL 1, *1.1*) ---------------------

SERVICE_SECRET = "service-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJK"


def _domains(**settings: Any) -> TokenVerifier:
    from worksession.config import Settings
    from worksession.lifespan import build_verifier

    return build_verifier(Settings(_env_file=None, jwt_secret=SECRET, **settings))  # type: ignore[call-arg]


def _hs256(payload: dict[str, Any], secret: str) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _plain(**overrides: Any) -> dict[str, Any]:
    return claims(**{"iss": DROP, "aud": DROP, **overrides})


def test_with_a_service_key_the_participant_key_cannot_sign_a_service_token() -> None:
    verifier = _domains(service_jwt_secret=SERVICE_SECRET)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(_hs256(_plain(user_type="service"), SECRET))
    assert refused.value.reason == "bad_signature"
    assert verifier.verify(_hs256(_plain(user_type="service"), SERVICE_SECRET)).user_type == (
        "service"
    )


@pytest.mark.parametrize("user_type", ["seeker", "provider"])
def test_with_a_service_key_it_cannot_sign_a_participant_token(user_type: str) -> None:
    verifier = _domains(service_jwt_secret=SERVICE_SECRET)
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(_hs256(_plain(user_type=user_type), SERVICE_SECRET))
    assert refused.value.reason == "bad_signature"
    assert verifier.verify(_hs256(_plain(user_type=user_type), SECRET)).user_type == user_type


def test_without_a_service_key_service_tokens_share_the_participant_key() -> None:
    # Outside production the service key is optional; tools and tests mint with one key.
    verifier = _domains()
    assert verifier.verify(_hs256(_plain(user_type="service"), SECRET)).user_type == "service"


def test_the_service_audience_is_required_of_service_tokens_only() -> None:
    verifier = _domains(service_jwt_secret=SERVICE_SECRET, service_jwt_audience="internal-api")
    for payload, reason in (
        (_plain(user_type="service"), "missing_claim:aud"),
        (_plain(user_type="service", aud="worksession"), "bad_claim:aud"),
    ):
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(_hs256(payload, SERVICE_SECRET))
        assert refused.value.reason == reason
    good = _plain(user_type="service", aud="internal-api")
    assert verifier.verify(_hs256(good, SERVICE_SECRET)).user_type == "service"
    # A participant token needs no service audience (none is configured for participants).
    assert verifier.verify(_hs256(_plain(), SECRET)).user_type == "seeker"


def test_the_service_audience_applies_even_on_the_shared_key() -> None:
    verifier = _domains(service_jwt_audience="internal-api")
    with pytest.raises(InvalidToken, match="missing_claim:aud"):
        verifier.verify(_hs256(_plain(user_type="service"), SECRET))
    good = _plain(user_type="service", aud="internal-api")
    assert verifier.verify(_hs256(good, SECRET)).user_type == "service"


def test_issue_signs_service_tokens_with_the_service_key() -> None:
    verifier = _domains(service_jwt_secret=SERVICE_SECRET, service_jwt_audience="internal-api")
    service = verifier.issue(sub="orders-svc", user_type="service")
    assert jwt.decode(service, SERVICE_SECRET, algorithms=["HS256"], audience="internal-api")
    seeker = verifier.issue(sub="alice", user_type="seeker")
    assert jwt.decode(seeker, SECRET, algorithms=["HS256"])
    assert verifier.verify(service).user_type == "service"
    assert verifier.verify(seeker).user_type == "seeker"


def test_a_public_key_service_domain_beside_hmac_participants() -> None:
    service_key = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier(
        algorithms=["HS256"],
        hmac_secret=SECRET,
        public_key=None,
        service_domain=TokenVerifier(
            algorithms=["ES256"], hmac_secret=None, public_key=pem(service_key)
        ),
    )
    signed = jwt.encode(_plain(user_type="service"), service_key, algorithm="ES256")
    assert verifier.verify(signed).user_type == "service"
    for token, reason in (
        (_hs256(_plain(user_type="service"), SECRET), "algorithm_not_allowed"),
        (jwt.encode(_plain(), service_key, algorithm="ES256"), "algorithm_not_allowed"),
    ):
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(token)
        assert refused.value.reason == reason


@pytest.mark.parametrize(
    "payload_segment",
    ["!!!", b64(b"\xff\xfe"), b64(b"[" * 3000 + b"]" * 3000), b64json(["service"])],
    ids=["not-base64", "not-utf8", "deep-nesting", "not-an-object"],
)
def test_an_unreadable_payload_is_refused_by_the_participant_domain(payload_segment: str) -> None:
    verifier = _domains(service_jwt_secret=SERVICE_SECRET)
    with pytest.raises(InvalidToken):
        verifier.verify(f"{b64json({'alg': 'HS256'})}.{payload_segment}.{b64(b'sig')}")
