"""Server-sent events as OpenAI-compatible engines stream them: the `data:` payloads of a response."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent event stream (multi-line data joined with newlines)."""
    data: list[bytes] = []
    async for line in resp.content:
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
    if data:
        yield b"\n".join(data)
