"""Building the redis-py client: timeouts, keep-alive and health checks that notice a
silently dead connection, and the persistence check made at connect."""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pycomms.spi import BackendConfig

from ._options import RedisOptions

log = logging.getLogger("pycomms.redis")
_warned_no_aof: set[str] = set()


def make_client(config: BackendConfig, options: RedisOptions) -> Redis:
    """A client whose every wait is bounded by ``options.socket_timeout``.

    redis-py's own retries are off: each caller decides whether a failed command may be
    sent again (a publish may, with at-least-once duplicates; a blocking read just loops).
    """
    parts = urlsplit(config.url)
    base_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive_options(),
        "health_check_interval": options.health_check_interval,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "decode_responses": False,
        "client_name": "pycomms",
    }
    if config.scheme == "rediss":
        kwargs["ssl_cert_reqs"] = "required" if options.tls_verify else "none"
        kwargs["ssl_check_hostname"] = options.tls_verify
        if options.tls_ca_file:
            kwargs["ssl_ca_certs"] = options.tls_ca_file
        if options.tls_cert_file:
            kwargs["ssl_certfile"] = options.tls_cert_file
        if options.tls_key_file:
            kwargs["ssl_keyfile"] = options.tls_key_file
    return Redis.from_url(base_url, **kwargs)


def _keepalive_options() -> dict[int, int]:
    """Probe an idle connection after 2 s, every 1 s, give up after 2 missed probes."""
    wanted = {"TCP_KEEPIDLE": 2, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 2}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


async def warn_without_aof(client: Redis, where: str, *, warn: bool = True) -> bool:
    """Return whether the server's append-only file is on; when it is off, log a
    warning the first time in this process (later servers without it: at info level,
    once each). A server that hides INFO counts as on."""
    try:
        info = await client.info("persistence")
    except (RedisError, OSError):  # some managed services restrict INFO; nothing to warn about then
        return True
    enabled = str(info.get("aof_enabled", "1")) == "1"
    if warn and not enabled and where not in _warned_no_aof:
        level = logging.INFO if _warned_no_aof else logging.WARNING
        _warned_no_aof.add(where)
        log.log(
            level,
            "redis at %s has appendonly=no: a crash or restart of the server loses messages that were already "
            "acknowledged to publishers. Enable it (appendonly yes, appendfsync everysec) for durable messaging "
            "(this warning is shown once per process).",
            where,
        )
    return enabled
