"""The address a student's WebSocket is handed, in one place: the public base when it is known
(the configured `server.public_url`, or RunPod's public TCP mapping), else the local listening
address (RunPod jobs) or the host the request came to (the HTTP API), and the stream URL on it."""

from __future__ import annotations

from collections.abc import Mapping

from core.config import ServerConfig


def public_ws_base(server: ServerConfig, env: Mapping[str, str]) -> str | None:
    """Where students reach this worker's WebSocket from outside, when that is known:
    the configured `server.public_url` (https -> wss), else RunPod's public TCP mapping of
    `server.port` (`RUNPOD_PUBLIC_IP` and `RUNPOD_TCP_PORT_<port>`). A configured URL wins
    because it is the operator's explicit choice (typically TLS in front of the worker)."""
    if server.public_url:
        base = server.public_url.rstrip("/")
        return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    ip, port = env.get("RUNPOD_PUBLIC_IP"), env.get(f"RUNPOD_TCP_PORT_{server.port}")
    if ip and port:
        return f"ws://{ip}:{port}"
    return None


def local_ws_base(server: ServerConfig) -> str:
    """The worker's own listening address, as a WebSocket base (a wildcard host as loopback)."""
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"ws://{host}:{server.port}"


def request_ws_base(secure: bool, host: str) -> str:
    """The base a client that reached us at `host` can come back to."""
    return f"{'wss' if secure else 'ws'}://{host}"


def stream_url(base: str, code: str, token: str) -> str:
    return f"{base}/v1/sessions/{code}/stream?token={token}"
