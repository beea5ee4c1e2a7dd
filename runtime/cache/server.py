"""The peer server: verified chunks by content hash, over HTTP, with sendfile.

    GET  /v1/chunks/<BLAKE3 hex>     the chunk's bytes (sent with sendfile from the store)
    HEAD /v1/chunks/<hash>           whether this node has it
    GET  /v1/runs/<hash>,<hash>,...  consecutive chunks of one file (at most MAX_RUN), their bytes one after the
                                     other in one answer: one request and one sendfile stream for several chunks
                                     (409 where they are not one span of one file here; the client asks them alone)
    GET  /v1/inventory               every chunk hash this node can serve, as a JSON list
    GET  /v1/inventory?since=E:N     what it gained since the answer that said {"epoch": E, "seq": N}:
                                     {"epoch", "seq", "full", "chunks"} (all of them when E is not this server's)
    GET  /v1/inventory/stream        a line of hash prefixes each time it gains chunks (inventory.py)
    GET  /v1/manifest?url=<model>    the manifest this node pulled from that URL (when the origin is down)
    GET  /healthz                    no token needed

Security model: every request but /healthz needs `Authorization: Bearer <fleet token>`
(compared in constant time); 401 without one, 403 with a wrong one. A request names a hash,
never a path: anything but 32 lowercase hex digits is refused before the store is asked, and the
store maps hashes to its own files, so nothing a client sends reaches the file system. At most
`max_transfers` chunks are sent at once; beyond that the answer is 503 and the client asks
another peer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

from spotstack.runtime.cache.inventory import PREFIX, STREAM_PATH, InventoryLog, InventoryWatch
from spotstack.runtime.cache.store import ChunkRef, Store
from spotstack.runtime.config import PEER_PORT
from spotstack.runtime.net import Limits, serve

log = logging.getLogger("spotstack.cache.server")


HASH = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{32})$")
"""BLAKE3-256 (manifest version 2) or xxh3-128 (version 1) hex digests."""
MIN_TOKEN_LEN = 16
MAX_RUN = 8
"""Most chunks one /v1/runs request may name (a 16 MiB chunk each: 128 MiB in one answer). Advertised in the
inventory answer (`runs`): a client asks runs only of a peer that says it serves them."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SlowReader(ConnectionResetError):
    """The reader took longer than the send timeout; its connection was cut and its slot freed."""


class ChunkResponse(web.StreamResponse):
    """One byte range of a store file, sent with sendfile(2) as aiohttp's FileResponse does.

    FileResponse takes its range from the request's Range header; a chunk's range comes from the
    store instead, so this sends [offset, offset + size) itself (with a read/write fallback where
    the loop has no sendfile).
    """

    def __init__(self, fobj: Any, offset: int, size: int, headers: dict[str, str], send_timeout_s: float) -> None:
        """`fobj`: the store file, opened by the caller (before any header is sent); closed here."""
        super().__init__(status=200, headers=headers)
        self.content_length = size
        self._fobj, self._offset, self._size = fobj, offset, size
        self._send_timeout_s = send_timeout_s

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return self._payload_writer
        fobj = self._fobj
        try:
            writer = await super().prepare(request)
            assert writer is not None
            loop = asyncio.get_running_loop()
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            try:
                await asyncio.wait_for(self._send(loop, transport, writer, fobj), self._send_timeout_s)
            except asyncio.TimeoutError:
                # A reader this slow holds a transfer slot other nodes need: it loses the slot and the connection.
                transport.abort()
                raise SlowReader(f"chunk not sent in {self._send_timeout_s:.0f}s") from None
        finally:
            fobj.close()
        await super().write_eof()
        return writer

    async def _send(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, writer: AbstractStreamWriter, fobj: Any
    ) -> None:
        try:
            await loop.sendfile(transport, fobj, self._offset, self._size)  # type: ignore[arg-type]
        except NotImplementedError:
            fobj.seek(self._offset)
            left = self._size
            while left:
                data = await asyncio.to_thread(fobj.read, min(left, 1 << 20))
                await writer.write(data)
                left -= len(data)


class PeerServer:
    def __init__(
        self,
        store: Store,
        token: str,
        host: str = "0.0.0.0",
        port: int = PEER_PORT,
        max_transfers: int = 8,
        limits: Limits | None = None,
        send_timeout_s: float = 30.0,
        congestion_control: str | None = None,
    ) -> None:
        if len(token) < MIN_TOKEN_LEN:
            raise ValueError(f"the fleet token must be at least {MIN_TOKEN_LEN} characters")
        self.store, self.host, self.port = store, host, port
        self._token = f"Bearer {token}".encode()
        self._slots = asyncio.Semaphore(max_transfers)
        self.max_transfers = max_transfers
        self.limits = limits or Limits()
        self.send_timeout_s = send_timeout_s
        """Most time one chunk may take to send (16 MiB in 30 s: a reader below ~0.5 MB/s loses its slot)."""
        self.congestion_control = congestion_control
        """TCP congestion control the chunks are sent with; None: the host's (docs/cache.md says when to set it)."""
        self.served_bytes = 0
        self.refused = {"unauthenticated": 0, "forbidden": 0, "bad_hash": 0, "busy": 0, "too_slow": 0}
        self._runner: web.AppRunner | None = None
        self._inventory_log = InventoryLog()
        self._watch = InventoryWatch(store.inventory)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        given = request.headers.get("Authorization")
        try:
            raw = given.encode("utf-8") if given is not None else None
        except UnicodeEncodeError:
            raw = None  # bytes that are not UTF-8 cannot be our token: answer as if none was given
        if raw is None:
            self.refused["unauthenticated"] += 1
            return web.Response(status=401, text="token required\n", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(raw, self._token):
            self.refused["forbidden"] += 1
            return web.Response(status=403, text="wrong token\n")
        return await handler(request)

    async def chunk(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if not HASH.match(digest):
            self.refused["bad_hash"] += 1
            return web.Response(status=400, text="chunks are addressed by their BLAKE3 (or xxh3-128) hex digest\n")
        found = self.store.locate(digest)
        if found is None:
            return web.Response(status=404, text="not here\n")
        path, ref = found
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(ref.size), "X-Chunk-Hash": digest})
        return await self._send_span(request, path, ref, ref.offset, ref.size, {"X-Chunk-Hash": digest}, 1)

    async def run(self, request: web.Request) -> web.StreamResponse:
        """Consecutive chunks of one file in one answer: the span from the first's start to the last's end."""
        digests = request.match_info["digests"].split(",")
        if not 0 < len(digests) <= MAX_RUN or not all(HASH.match(d) for d in digests):
            self.refused["bad_hash"] += 1
            return web.Response(status=400, text=f"a run is 1 to {MAX_RUN} chunk hex digests, comma-separated\n")
        found = [self.store.locate(d) for d in digests]
        located = [f for f in found if f is not None]
        if len(located) < len(found):
            return web.Response(status=404, text="not here\n")
        refs = [ref for _, ref in located]
        first, last = refs[0], refs[-1]
        if any(r.file_key != first.file_key or r.index != first.index + k for k, r in enumerate(refs)):
            # Not one span here (a chunk whose bytes are also elsewhere is indexed under that file): ask them alone.
            return web.Response(status=409, text="not consecutive chunks of one file here\n")
        # A chunk found in files/ means the file is whole: every chunk of the run is there (the partial file was
        # renamed into it, same inode).
        full = self.store.file_path(first.file_key)
        path = full if any(p == full for p, _ in located) else located[0][0]
        size = last.offset + last.size - first.offset
        return await self._send_span(request, path, first, first.offset, size, {}, len(refs))

    async def _send_span(
        self, request: web.Request, path: Path, ref: ChunkRef, offset: int, size: int, headers: dict[str, str], n: int
    ) -> web.StreamResponse:
        """Send [offset, offset + size) of the store file holding `ref`, inside a transfer slot (`n` chunks' time)."""
        if self._slots.locked():
            self.refused["busy"] += 1
            return web.Response(status=503, text="busy\n", headers={"Retry-After": "1"})
        async with self._slots:
            fobj = self._open(path, ref)  # memory-backed: no disk to wait on (a thread hop cost more than the open)
            if fobj is None:
                return web.Response(status=404, text="not here\n")
            resp = ChunkResponse(fobj, offset, size, {**headers, "Cache-Control": "no-store"}, self.send_timeout_s * n)
            try:
                await resp.prepare(request)  # the transfer happens here, inside the slot
            except SlowReader:
                # Counted and cut, one line: a traceback per slow reader would flood the log of a node under attack.
                self.refused["too_slow"] += 1
                log.info("cut a peer reading %s too slowly (%s)", request.path[:40], request.remote)
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError() from None
        self.served_bytes += size
        self.store.touch(path)
        return resp

    def _open(self, path: Path, ref: ChunkRef) -> Any:
        """The file holding a chunk, opened; a partial file its pull renamed into files/ meanwhile is opened
        there (same inode, same bytes). None if it is gone altogether (evicted)."""
        for p in (path, self.store.file_path(ref.file_key)):
            try:
                return open(p, "rb")
            except FileNotFoundError:
                continue
        return None

    async def inventory(self, request: web.Request) -> web.Response:
        now = await asyncio.to_thread(self.store.inventory)
        since = request.query.get("since")
        if since is None:
            return web.json_response(now)
        return web.json_response({**self._inventory_log.since(now, since), "runs": MAX_RUN})

    async def inventory_stream(self, request: web.Request) -> web.StreamResponse:
        """A line each time this node holds new chunks (their hashes' first 16 hex digits; all of them first), an
        empty line on a quiet stream every HEARTBEAT_S (inventory.py)."""
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=ascii", "Cache-Control": "no-store"})
        await resp.prepare(request)
        sent: set[str] = set()
        try:
            async for now in self._watch.changes():
                new = [h for h in now if h not in sent]
                sent.update(new)
                await resp.write((" ".join(h[:PREFIX] for h in new) + "\n").encode())
        except (ConnectionResetError, ConnectionError):
            pass  # the reader is gone (its pull ended)
        return resp

    async def manifest(self, request: web.Request) -> web.Response:
        m = self.store.manifest_for_url(request.query.get("url", ""))
        if m is None:
            return web.Response(status=404, text="no manifest for that url\n")
        return web.Response(text=m.to_json(), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/v1/chunks/{digest}", self.chunk)  # and HEAD, as documented
        app.router.add_get("/v1/runs/{digests}", self.run, allow_head=False)  # (a HEAD answer carries no bytes)
        app.router.add_get("/v1/inventory", self.inventory)
        app.router.add_get(STREAM_PATH, self.inventory_stream)
        app.router.add_get("/v1/manifest", self.manifest)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def start(self) -> None:
        self._runner, self.port = await serve(
            self.app(), self.host, self.port, limits=self.limits, congestion_control=self.congestion_control
        )

    async def stop(self) -> None:
        await self._watch.close()
        if self._runner is not None:
            await self._runner.cleanup()
