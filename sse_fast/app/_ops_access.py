"""Who may read the operations endpoints (``/stats``, ``/metrics``, ``/presence``):
clients from ``ops_networks``, or anyone with the ``ops_token``. Apart from the
publishers' and subscribers' credentials (``_auth.py``), whose token helpers it uses."""

from __future__ import annotations

import ipaddress

from ..settings import AccessSettings
from ..settings._checks import split_list
from ._auth import AuthError, _bearer, _digest, _same_token

__all__ = ["OperationsAccess"]


class OperationsAccess:
    """Who may read ``/stats`` and ``/metrics`` (client addresses, topic names,
    private topics included): clients from ``ops_networks`` (loopback by
    default), or anyone with ``Authorization: Bearer <ops_token>``."""

    def __init__(self, settings: AccessSettings) -> None:
        self.networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in split_list(settings.ops_networks)
        )
        self._token_digest = _digest(settings.ops_token) if settings.ops_token else None

    def check(self, client_ip: str, authorization: str | None, path: str) -> None:
        """Raise ``AuthError`` unless this client may read ``path``."""
        if self._from_allowed_network(client_ip):
            return
        how = (
            "call it from " + ", ".join(str(n) for n in self.networks) + " (ops_networks)"
            if self.networks
            else "no network is allowed without a token (ops_networks is empty)"
        )
        if self._token_digest is None:
            raise AuthError(
                403,
                f"{path} is an operations endpoint: {how}; or set ops_token and send "
                "'Authorization: Bearer <ops_token>'",
                "ops_forbidden",
            )
        token = _bearer(authorization)
        if token is None:
            raise AuthError(
                401,
                f"{path} is an operations endpoint: send 'Authorization: Bearer <ops_token>', "
                f"or {how}",
                "ops_no_credential",
            )
        if not _same_token(token, self._token_digest):
            raise AuthError(401, f"invalid operations token for {path}", "ops_bad_token")

    def _from_allowed_network(self, client_ip: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:  # no address (a Unix socket is local): "?" or a path
            return client_ip == "?"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
