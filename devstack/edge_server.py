"""The dev stack's edge: the gateway and push router configured for the local platform and served by
the local adapters (``edge_workers.local``).

Only the wiring lives here: which origin, media base URL, Turnstile secret and VAPID key the local
edge uses when the environment does not say. Everything that stands in for Cloudflare (SQLite KV,
local rate limits, the HTTP server) is the edge's own local adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edge_workers.core.config import GatewayConfig
from edge_workers.local import EdgeServer

LOCAL_TURNSTILE_SECRET = "1x0000000000000000000000000000000AA"  # noqa: S105 - Cloudflare's public test key


def local_edge_config(
    env: Mapping[str, str],
    *,
    signing_secret: str,
    origins: Mapping[str, str],
    media_base_url: str,
    vapid_public_key: str | None,
) -> GatewayConfig:
    """The edge's configuration from the dev stack's environment, with local defaults filled in;
    ``origins`` maps each product's origin variable to its local API."""
    return GatewayConfig.from_mapping(
        {
            **env,
            "EDGE_SIGNING_SECRET": signing_secret,
            **{variable: env.get(variable) or url for variable, url in origins.items()},
            # Cloudflare's documented always-pass test secret: the local adapter answers it offline.
            "TURNSTILE_SECRET_KEY": env.get("TURNSTILE_SECRET_KEY") or LOCAL_TURNSTILE_SECRET,
            # Mounts the push router under /push/ on the same server (production routes it so too).
            "VAPID_PUBLIC_KEY": vapid_public_key or "",
            "MEDIA_PUBLIC_BASE_URL": env.get("MEDIA_PUBLIC_BASE_URL") or media_base_url,
        }
    )


def start_local_edge(host: str, port: int, data_dir: Path, config: GatewayConfig) -> EdgeServer:
    """Both workers served on ``host:port``, their KV under ``data_dir/kv``; started."""
    edge = EdgeServer(host, port, data_dir.resolve(), config)
    edge.start()
    return edge
