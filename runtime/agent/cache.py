"""The agent's peer cache: the fleet token (waited for, fail closed), the peer server, and the model pulled from
peers first (discovery, the swarm, the origin's credentials), retried until it is in place.

A part of `Agent` (its base class), kept apart because it is one concept: what the node serves and loads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from spotstack.runtime.agent.metrics import AgentMetrics
from spotstack.runtime.agent.state import AgentState
from spotstack.runtime.agent.wiring import Identity
from spotstack.runtime.backoff import Backoff
from spotstack.runtime.config import AgentConfig
from spotstack.runtime.secrets import SecretError

log = logging.getLogger("spotstack.agent")


class NodeCache:
    # What the agent gives its cache (set in Agent.__init__).
    cfg: AgentConfig
    state: AgentState
    metrics: AgentMetrics
    identity: Identity | None
    model_ready: asyncio.Event
    fleet_token: str | None
    peer_server: Any

    async def _read_token(self) -> str:
        """The fleet token, waiting for it: a node's boot may deliver it after the agent starts.

        Fail closed: until a usable token is there, /ready answers 503 and the reason is logged.
        """
        from spotstack.runtime.cache.server import MIN_TOKEN_LEN

        c = self.cfg.cache
        backoff, logged_at = Backoff(0.5, 10.0), 0.0
        while True:
            token, problem = os.environ.get("SPOTSTACK_CACHE_TOKEN", "").strip(), ""
            if c.token_file:
                try:
                    token = (await asyncio.to_thread(Path(c.token_file).read_text)).strip()
                except (OSError, UnicodeDecodeError) as exc:
                    problem = f"cannot read the cache token file {c.token_file}: {exc}"
            if not problem and len(token) < MIN_TOKEN_LEN:
                problem = (
                    f"no usable peer-cache token ({c.token_file or 'SPOTSTACK_CACHE_TOKEN'}: "
                    f"{len(token)} characters, need {MIN_TOKEN_LEN})"
                )
            if not problem:
                if self.state.blocked:
                    log.warning("peer-cache token is there now; the cache starts")
                self.state.blocked = None
                self.fleet_token = token
                return token
            self.state.blocked = problem
            if time.monotonic() - logged_at > 60:
                log.error("not ready: %s; retrying (the cache is enabled, so the node waits for it)", problem)
                logged_at = time.monotonic()
            await asyncio.sleep(backoff.next())

    async def _run_cache(self) -> None:
        """Serve this node's chunks to peers and pull the model (from peers first)."""
        from spotstack.runtime.cache.server import PeerServer
        from spotstack.runtime.cache.store import Store

        c = self.cfg.cache
        if c.model_url:
            self.state.model = {"state": "waiting", "url": c.model_url, "percent": 0.0}
        token = await self._read_token()
        store = await asyncio.to_thread(Store, c.store_dir, c.memory_limit_bytes)
        server = PeerServer(store, token, self.cfg.readiness.host, c.peer_port, congestion_control=c.congestion_control)
        backoff, logged_at = Backoff(0.5, 10.0), -60.0
        while True:
            try:
                await server.start()
                break
            except OSError as exc:
                # Retried, not given up: a port held by a connection's local end or a process on its way out is free
                # again soon; one another service keeps stays said in the log, and the node stays not ready.
                self.state.blocked = f"the peer cache cannot listen on port {c.peer_port}: {exc.strerror or exc}"
                if time.monotonic() - logged_at > 60:
                    log.error("not ready: %s; retrying", self.state.blocked)
                    logged_at = time.monotonic()
                await asyncio.sleep(backoff.next())
        if self.state.blocked:
            log.warning("the peer cache listens on port %d now", server.port)
            self.state.blocked = None
        self.peer_server = server
        if c.model_url:
            assert self.state.model is not None
            self.state.model["state"] = "loading"
            await self._load_model(store, token)

    async def _advertised(self, advertise: str | None, port: int) -> str | None:
        """The name peers know this node's cache by; `auto` reads the private address from metadata. Unknown:
        no swarm (the pull still uses peers and the origin)."""
        if advertise != "auto":
            return advertise
        ip = await self.identity.private_ip() if self.identity is not None else None
        if ip is None:
            log.warning("cache: no private address from metadata: pulling without the swarm")
            return None
        return f"{ip}:{port}"

    async def _load_model(self, store: Any, token: str) -> None:
        from spotstack.runtime.cache import origin_auth
        from spotstack.runtime.cache.discovery import discover
        from spotstack.runtime.cache.pull import (
            Origin,
            Progress,
            PullError,
            PullOptions,
            describe,
            pull,
        )
        from spotstack.runtime.cache.sources import resolve_manifest

        c = self.cfg.cache
        assert c.model_url is not None and self.state.model is not None and self.peer_server is not None
        me = {f"127.0.0.1:{self.peer_server.port}", f"localhost:{self.peer_server.port}"}

        banned = 0

        def show(p: Progress) -> None:
            nonlocal banned
            assert self.state.model is not None
            if p.last_chunk is not None:
                source, size, seconds = p.last_chunk
                kind = "origin" if source == "origin" else "peer"
                self.metrics.cache_bytes.labels(kind).inc(size)
                self.metrics.cache_chunk.labels(kind).observe(seconds)
            if len(p.banned) > banned:
                self.metrics.cache_bans.inc(len(p.banned) - banned)
                banned = len(p.banned)
            self.state.model.update(
                percent=round(100 * p.done / max(p.total, 1), 1), from_peers=p.from_peers, from_origin=p.from_origin
            )

        swarm_self = await self._advertised(c.advertise, c.peer_port)
        backoff = Backoff(1.0, 30.0)
        while True:
            stage = "discovery"
            try:
                instance = self.identity.instance_id if self.identity else None
                zones: dict[str, str] = {}
                peers = await asyncio.to_thread(
                    self._peers,
                    discover,
                    c.discovery,
                    peers=c.peers,
                    target=c.discovery_target,
                    port=c.peer_port,
                    region=self.cfg.region,
                    exclude=me,
                    instance_id=instance,
                    metadata_url=self.cfg.metadata_url,
                    endpoint=c.discovery_endpoint,
                    zones=zones,
                )
                await asyncio.to_thread(
                    origin_auth.configure,
                    c.model_url,
                    region=self.cfg.region,
                    metadata_url=self.cfg.metadata_url,
                    endpoint=c.origin_endpoint,
                    bucket_region=c.origin_region,
                )
                stage = "manifest"
                manifest, _ = await asyncio.to_thread(
                    resolve_manifest, c.model_url, peers, token, digest=c.manifest_digest
                )
                stage = "pull"
                origin = await asyncio.to_thread(Origin, c.model_url)  # fsspec: imports, credential lookups
                result = await asyncio.to_thread(
                    pull,
                    store,
                    manifest,
                    c.dest,
                    peers=peers,
                    token=token,
                    origin=origin,
                    options=PullOptions(
                        swarm_self=swarm_self,
                        origin_connections=c.origin_connections,
                        connections_per_peer=c.connections_per_peer,
                        zone=zones.pop("", None),
                        peer_zones=zones,
                    ),
                    progress=show,
                )
                store.remember_source(c.model_url, manifest.model_id)
                self.state.model.update(state="ready", percent=100.0, **describe(result))
                self.model_ready.set()
                log.info(
                    "model ready in %s: %.2f GB from peers, %.2f GB from origin",
                    c.dest,
                    result.progress.from_peers / 1e9,
                    result.progress.from_origin / 1e9,
                )
                return
            except (PullError, OSError, ValueError, SecretError) as exc:
                # No manifest anywhere: the model is not uploaded yet (a warm pool instance need not wait for it).
                missing = stage == "manifest" and isinstance(exc, PullError)
                self.state.model.update(state="no_manifest" if missing else "retrying", error=str(exc))
                pause = backoff.next()
                log.error("model pull failed, retrying in %.0fs: %s", pause, exc)
                await asyncio.sleep(pause)

    @staticmethod
    def _peers(discover: Any, kind: str, **kw: Any) -> list[str]:
        """The fleet's peers; none when discovery fails (its permission not yet there, the API down): the model
        still loads, from the origin, rather than waiting on the peers."""
        try:
            return list(discover(kind, **kw))
        except Exception as exc:
            log.warning("peer discovery (%s) failed, pulling without peers: %s", kind, exc)
            return []
