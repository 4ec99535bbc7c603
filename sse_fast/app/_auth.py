"""Credentials for publishers and subscribers (JWT via PyJWT, or a static token),
topic claims with glob patterns, and the small limiters the edge needs.

JWT claims (Mercure-like, namespaced)::

    {"sse_fast": {"publish": ["orders", "user/*"], "subscribe": ["user/42/*"]},
     "sub": "service-a", "exp": 1790000000}

Patterns are exact names or globs where ``*`` matches any run of characters
(slashes included) and ``?`` one character; ``*`` alone allows every topic.
Nothing else is special: a claim with ``[`` is refused (401), so a grant never
means more than it says (``sse_fast/_patterns.py``, the one matcher). Topic
names cannot contain ``*``, ``?`` or ``[``, so a name never matches as a
pattern by accident. The static publish token grants publishing to every
topic and never subscribing to private ones.

A private topic's presence is private too: ``<topic>/presence`` (its
companion, ``hub/_presence.py``) is private when ``<topic>`` is, and a
subscribe grant that covers the private topic covers its companion. The
companion of a topic ``public_presence_topics`` covers is public, whatever
``private_topics`` says (``presence_warnings`` names it at start).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._companions import COMPANION, topic_of_companion
from .._core.request import PublishRequest
from .._patterns import (
    PatternError,
    Uncovered,
    check_pattern,
    is_pattern,
    matches,
    meets,
)
from .._patterns import uncovered as _uncovered
from ..settings import AccessSettings, FeatureSettings
from ..settings._checks import jwt_configured, pyjwt, split_list

__all__ = [
    "CLAIMS_NAMESPACE",
    "JWT_LEEWAY",
    "AuthError",
    "Authenticator",
    "Credential",
    "matches",
    "presence_warnings",
]


#: the JWT claim holding a token's rights: ``{"publish": [...], "subscribe": [...]}``
CLAIMS_NAMESPACE = "sse_fast"
#: decoded JWTs kept (by token), so a publisher is not verified again on every request
DECODED_CACHE_SIZE = 10_000
#: seconds of clock skew allowed around a JWT's ``exp``, ``nbf`` and ``iat``
JWT_LEEWAY = 5


class AuthError(Exception):
    """Refused: ``status`` 401 (no or bad credential) or 403 (credential lacks the right)."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Credential:
    """An accepted credential: an ``identity`` for rate limits and logs (never the token itself),
    the topic patterns it may ``publish`` and ``subscribe`` to, and when it expires (wall clock;
    None: never)."""

    identity: str  # for rate limits and logs: never the token itself
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    expires_at: float | None = None  # wall clock (time.time())
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the JWT's ``sub`` claim (presence names subscribers by it), None without one
    subject: str | None = None

    @property
    def publishes_anywhere(self) -> bool:
        """Whether it may publish to every topic (``publish`` is ``("*",)``)."""
        return self.publish == ("*",)


class Authenticator:
    """Checks credentials against the settings; one per app. ``clock`` is the wall
    clock (``time.time``) a token's ``exp``, ``nbf`` and ``iat`` are checked against,
    here and not by PyJWT (whose own clock cannot be given), so that a test moves it
    instead of waiting for a token to expire."""

    def __init__(
        self,
        access: AccessSettings,
        clock: Callable[[], float] = time.time,
        *,
        public_presence_topics: str = "",
    ) -> None:
        """``public_presence_topics``: the presence topics anyone may read (a
        ``FeatureSettings`` field)."""
        self.access = access
        self.clock = clock
        self.private_topics = split_list(access.private_topics)
        self.public_presence_topics = split_list(public_presence_topics)
        self._keys: list[tuple[Any, list[str]]] = []  # (key, algorithms)
        self._jwks: Any = None
        self._jwt: Any = None  # PyJWT, with a key
        if jwt_configured(access):
            self._jwt = pyjwt()
        if access.jwt_secret:
            self._keys.append((access.jwt_secret, ["HS256", "HS384", "HS512"]))
        if access.jwt_public_key_file:
            with open(access.jwt_public_key_file, "rb") as f:
                pem = f.read()
            self._keys.append((pem, ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]))
        if access.jwt_jwks_file:
            with open(access.jwt_jwks_file) as f:
                self._jwks = self._jwt.PyJWKSet.from_dict(json.load(f))
        self._token_digest = _digest(access.publish_token) if access.publish_token else None
        # built once, not per request (a publish path doing thousands a second)
        self._anonymous = Credential("anonymous", publish=("*",))
        self._static = (
            Credential(
                "token:" + hashlib.sha256(access.publish_token.encode()).hexdigest()[:12],
                publish=("*",),
            )
            if access.publish_token
            else None
        )
        # decoded JWTs by token (a publisher sends the same one on every request);
        # an entry is used only while its token is unexpired
        self._decoded: dict[str, Credential] = {}

    @property
    def jwt_enabled(self) -> bool:
        """Whether a JWT key is configured (a secret, a public key or a JWKS)."""
        return bool(self._keys or self._jwks)

    def _decode(self, token: str) -> Credential:
        cached = self._decoded.get(token)
        if cached is not None:
            if cached.expires_at is None or cached.expires_at + JWT_LEEWAY > self.clock():
                return cached
            del self._decoded[token]
        credential = self._decode_uncached(token)
        if len(self._decoded) >= DECODED_CACHE_SIZE:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[token] = credential
        return credential

    def _decode_uncached(self, token: str) -> Credential:
        jwt = self._jwt
        errors = []
        candidates: list[tuple[Any, list[str]]] = list(self._keys)
        if self._jwks is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError as exc:
                raise AuthError(401, f"malformed token: {exc}", "bad_token") from None
            for jwk in self._jwks.keys:
                if kid is None or jwk.key_id == kid:
                    candidates.append((jwk.key, [jwk.algorithm_name]))
        # the times are checked below, against this authenticator's clock
        options: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
        if self.access.jwt_require_exp:
            options["require"] = ["exp"]
        for key, algorithms in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    options=options,
                    audience=self.access.jwt_audience or None,
                    issuer=self.access.jwt_issuer or None,
                    leeway=JWT_LEEWAY,
                )
            except jwt.PyJWTError as exc:  # wrong key, algorithm, audience, ...: try the next
                errors.append(str(exc))
                continue
            expires_at = _check_times(claims, self.clock())
            rights = claims.get(CLAIMS_NAMESPACE) or {}
            if not isinstance(rights, dict):
                raise AuthError(401, f"claim {CLAIMS_NAMESPACE!r} must be an object", "bad_token")
            publish = _patterns(rights.get("publish"), "publish")
            subscribe = _patterns(rights.get("subscribe"), "subscribe")
            identity = "jwt:" + str(
                claims.get("sub") or hashlib.sha256(token.encode()).hexdigest()[:16]
            )
            sub = claims.get("sub")
            return Credential(
                identity,
                publish,
                subscribe,
                expires_at,
                subject=str(sub) if isinstance(sub, (str, int)) and sub != "" else None,
            )
        reason = "; ".join(dict.fromkeys(errors)) or "no key configured"
        raise AuthError(401, f"invalid token: {reason}", "bad_token")

    def _check_static(self, token: str) -> Credential | None:
        if self._token_digest is None:
            return None
        if _same_token(token, self._token_digest):
            return self._static
        return None

    def publisher(self, authorization: str | None) -> Credential:
        """The publisher's credential from its ``Authorization`` header."""
        if self.access.allow_anonymous_publish and not authorization:
            return self._anonymous
        token = _bearer(authorization)
        if token is None:
            if not (self.jwt_enabled or self._token_digest):
                raise AuthError(
                    401,
                    "publishing needs a credential and none is configured: "
                    "set SSE_FAST_PUBLISH_TOKEN or JWT keys, or run with "
                    "--allow-anonymous-publish",
                    "no_credential",
                )
            raise AuthError(
                401,
                "publishing needs a credential: send 'Authorization: Bearer <token>'",
                "no_credential",
            )
        static = self._check_static(token)
        if static is not None:
            return static
        if not self.jwt_enabled:
            raise AuthError(401, "invalid token", "bad_token")
        return self._decode(token)

    def check_publish(self, credential: Credential, requests: Iterable[PublishRequest]) -> None:
        """Refuse (403) the topics of ``requests`` the credential may not publish to;
        nothing is looked at for a credential that may publish anywhere."""
        if credential.publishes_anywhere:
            return
        denied = list(
            dict.fromkeys(
                t for r in requests for t in r.topics if not matches(t, credential.publish)
            )
        )
        if denied:
            raise AuthError(
                403,
                f"this credential may not publish to {', '.join(denied[:5])}",
                "forbidden_topic",
            )

    def is_private(self, topic: str) -> bool:
        """Whether subscribing to ``topic`` needs a credential: it matches
        ``private_topics``, or it is the presence companion of a topic that does;
        never the companion of a topic ``public_presence_topics`` covers."""
        of = topic_of_companion(topic)
        if of is not None and matches(of, self.public_presence_topics):
            return False
        if matches(topic, self.private_topics):
            return True
        return of is not None and matches(of, self.private_topics)

    def may_subscribe(self, credential: Credential, topic: str) -> bool:
        """Whether ``credential``'s subscribe grants cover ``topic``: a pattern of
        them matches it, or it is the companion of a private topic one matches."""
        if matches(topic, credential.subscribe):
            return True
        of = topic_of_companion(topic)
        return (
            of is not None
            and matches(of, self.private_topics)
            and matches(of, credential.subscribe)
        )

    def subscriber(
        self,
        authorization: str | None,
        cookie: str | None,
        query_token: str | None,
        topics: Iterable[str],
        on_ignored_cookie: Callable[[AuthError], None] | None = None,
    ) -> Credential | None:
        """The subscriber's credential (header, cookie, or query when allowed),
        checked against the private topics it asks for.

        A cookie that fails verification (expired, signed with a rotated key,
        garbage) is ignored on a request for public topics only, and
        ``on_ignored_cookie`` is told: browsers send cookies by themselves, and a
        stale one must not lock anyone out of public streams. A bad
        ``Authorization`` header or query token is always refused (401): that
        client chose to send it."""
        token = _bearer(authorization)
        from_cookie = False
        if token is None and cookie:
            token = _cookie(cookie, self.access.auth_cookie)
            from_cookie = token is not None
        if token is None and query_token:
            if not self.access.allow_query_token:
                raise AuthError(
                    401,
                    "tokens in the URL are disabled (they end up in logs): "
                    "use the Authorization header or the "
                    f"{self.access.auth_cookie!r} cookie",
                    "query_token",
                )
            token = query_token
        names = list(topics)
        patterns = [t for t in names if is_pattern(t)]
        private = [t for t in names if not is_pattern(t) and self.is_private(t)]
        if token is None:
            if private:
                raise AuthError(
                    401,
                    f"topic {private[0]!r} is private: send a token with subscribe rights",
                    "no_credential",
                )
            refused = self._first_reaching(patterns, ())
            if refused is not None:
                raise _pattern_refusal(*refused, 401, reason="no_credential")
            return None
        try:
            if not self.jwt_enabled:
                raise AuthError(401, "subscriber tokens need JWT keys on the server", "bad_token")
            credential = self._decode(token)
        except AuthError as exc:
            if from_cookie and not private and self._first_reaching(patterns, ()) is None:
                if on_ignored_cookie is not None:
                    on_ignored_cookie(exc)
                return None
            raise
        denied = [t for t in private if not self.may_subscribe(credential, t)]
        if denied:
            raise AuthError(
                403, f"this token may not subscribe to {', '.join(denied[:5])}", "forbidden_topic"
            )
        refused = self._first_reaching(patterns, credential.subscribe)
        if refused is not None:
            raise _pattern_refusal(*refused, 403, reason="forbidden_pattern")
        return credential

    def _first_reaching(
        self, patterns: list[str], grants: tuple[str, ...]
    ) -> tuple[str, Reach] | None:
        """The first of ``patterns`` that reaches (or may reach: too complex to tell) a
        private topic outside ``grants``, and what ``reach`` found; None when none
        does. The first ends the checks; all share one request's budget."""
        budget = Budget(REQUEST_BUDGET)
        for pattern in patterns:
            found = self.reach(pattern, grants, budget)
            if found.reaches or found.too_complex:
                return pattern, found
        return None

    def reach(self, pattern: str, grants: tuple[str, ...], budget: Budget) -> Reach:
        """Whether subscription ``pattern`` can reach a private topic that ``grants``
        do not cover. A pattern never reaches a presence companion (``<topic>/presence``:
        named, never matched), so the companion rule stays out of it: for any other
        topic, private is ``private_topics`` and may subscribe is the grants.

        Bounded work whatever the pattern (see the security page): the private
        patterns it meets are found by ``meets`` (the server's patterns' length, not
        the subscriber's); only where it meets one does containment walk, and only
        through the grants and the companion rule that meet the pattern too, within
        ``budget`` (``too_complex`` past it: the caller refuses, 400)."""
        if _companions_only(pattern):  # every topic it matches is one it never reaches
            return _NOTHING
        reached = tuple(p for p in self.private_topics if meets(pattern, (p,)))
        if not reached or any(_inside(pattern, grant) for grant in grants):
            return _NOTHING
        # "?*": a companion has a topic before its suffix ("/presence" alone is a topic)
        companion = "?*" + COMPANION
        excluded = tuple(g for g in grants if meets(pattern, (g,)))
        if any(meets(pattern, (p, companion)) for p in reached):
            excluded = (*excluded, companion)
        if not excluded:  # it meets a private pattern, nothing leaves any topic out
            found = budget.walk(pattern, reached, (), WITNESS_BUDGET)
            return Reach(True, found.witness, False)
        found = budget.walk(pattern, reached, excluded, PATTERN_BUDGET)
        return Reach(found.witness is not None, found.witness, found.too_complex)


#: steps of the containment walk (one character tried, every pattern moved by it: about
#: a quarter of a microsecond) one subscription pattern may take, and one request in
#: all (walks the cache answered are free); past either the pattern is refused (400,
#: ``pattern_too_complex``): under 1 ms of a worker's CPU (benches/admission.py). Only
#: patterns that meet the private ones walk; without a credential a request walks at
#: most ``WITNESS_BUDGET``.
PATTERN_BUDGET = 2_500
REQUEST_BUDGET = 2_500
#: steps spent looking for a topic to name in a refusal that is certain already
WITNESS_BUDGET = 1_000


def _companions_only(pattern: str) -> bool:
    """Whether every topic ``pattern`` matches is a presence companion: it ends with
    ``COMPANION`` after something that matches one character at least."""
    before = pattern[: -len(COMPANION)]
    return pattern.endswith(COMPANION) and before.strip("*") != ""


def _inside(pattern: str, grant: str) -> bool:
    """Whether every topic ``pattern`` matches is one ``grant`` matches, where that is
    plain to see: the same pattern, or a grant of a literal start and one ``*``
    (``user/42/*``, the usual shape) that the pattern's literal start begins with."""
    if pattern == grant:
        return True
    start = grant[:-1]
    return grant.endswith("*") and not is_pattern(start) and pattern.startswith(start)


class Budget:
    """What is left of a request's containment steps."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def walk(
        self, pattern: str, reached: tuple[str, ...], excluded: tuple[str, ...], most: int
    ) -> Uncovered:
        """``_patterns.uncovered`` within ``most`` steps or what is left, if less; its
        steps spent unless the cache answered."""
        hits = _uncovered.cache_info().hits
        found = _uncovered(pattern, reached, excluded, max(0, min(most, self.left)))
        if _uncovered.cache_info().hits == hits:
            self.left -= found.steps
        return found


class Reach(NamedTuple):
    """What ``Authenticator.reach`` found."""

    #: whether the pattern reaches a private topic outside the grants
    reaches: bool
    #: such a topic, when a short walk found one (named in the refusal)
    witness: str | None
    #: the walk used up its budget before it could tell (refuse, 400)
    too_complex: bool


#: ``Authenticator.reach`` found nothing: the pattern stays inside what may be had
_NOTHING = Reach(False, None, False)


def _pattern_refusal(pattern: str, found: Reach, status: int, reason: str) -> AuthError:
    """The refusal of a pattern that reaches (or may reach) what it may not."""
    if found.too_complex:
        return AuthError(
            400,
            f"pattern {pattern[:80]!r} overlaps the private topics in a way too complex to "
            "check against this credential's grants within the server's budget: narrow it "
            "(fewer wildcards, a longer literal start), or name the topics",
            "pattern_too_complex",
        )
    needs = "send a token with subscribe rights for it" if status == 401 else "narrow it"
    what = (
        f"can reach {found.witness!r}, a private topic"
        if found.witness is not None
        else "can reach private topics"
    )
    return AuthError(
        status,
        f"pattern {pattern[:80]!r} {what} this "
        f"{'request' if status == 401 else 'token'} may not subscribe to: {needs} (a pattern "
        "must stay within the token's subscribe grants wherever it meets private_topics)",
        reason,
    )


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(
            401, f"claim {CLAIMS_NAMESPACE}.{name} must be a list of topic patterns", "bad_token"
        )
    for pattern in value:
        try:
            check_pattern(pattern)
        except PatternError as exc:
            raise AuthError(
                401, f"claim {CLAIMS_NAMESPACE}.{name}: {exc} (ask the token's issuer)", "bad_token"
            ) from None
    return tuple(value)


def presence_warnings(access: AccessSettings, features: FeatureSettings) -> list[str]:
    """What ``serve`` warns of at start: each ``public_presence_topics`` pattern that
    makes public the presence news of topics that are private (``private_topics``)
    and tracked (``presence_topics``): anyone may read who subscribes to them."""
    private = split_list(access.private_topics)
    tracked = split_list(features.presence_topics)
    warnings = []
    for public in split_list(features.public_presence_topics):
        exposed = [
            pattern
            for pattern in private
            if any(meets(public, (pattern, news)) for news in tracked)
        ]
        if exposed:
            warnings.append(
                f"public_presence_topics {public!r}: the presence of private topics "
                f"({', '.join(exposed)}) is public: anyone may subscribe to <topic>{COMPANION} "
                "and read who subscribes to them; leave public_presence_topics out to keep "
                "it private"
            )
    return warnings


def _seconds(claims: Mapping[str, Any], name: str) -> float | None:
    """A time claim as PyJWT reads it (``int()`` of it: a number or a numeric string,
    a fraction cut off); None without one; 401 for anything else."""
    if name not in claims:
        return None
    try:
        return float(int(claims[name]))
    except (ValueError, TypeError, OverflowError):
        raise AuthError(401, f"claim {name!r} must be an integer (seconds)", "bad_token") from None


def _check_times(claims: Mapping[str, Any], now: float) -> float | None:
    """PyJWT's checks of ``iat``, ``nbf`` and ``exp`` (the same reading, the same
    ``JWT_LEEWAY``), made at ``now``; the expiry (None: never), so that the cached
    credential and its streams expire exactly when the token is refused."""
    for name in ("iat", "nbf"):
        at = _seconds(claims, name)
        if at is not None and at > now + JWT_LEEWAY:
            raise AuthError(
                401, f"invalid token: it is not valid yet ({name} is in the future)", "bad_token"
            )
    expires_at = _seconds(claims, "exp")
    if expires_at is not None and expires_at <= now - JWT_LEEWAY:
        raise AuthError(401, "token has expired: get a new one", "expired_token")
    return expires_at


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _same_token(token: str, digest: bytes) -> bool:
    """Constant-time comparison of a presented token with a configured one's digest."""
    return hmac.compare_digest(_digest(token), digest)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "Authorization must be 'Bearer <token>'", "bad_token")
    return token.strip()


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None
