"""What the local "cloud" posts to its nodes' metadata emulators: a spot notice, a scale-in (lifecycle Terminated).

Each is an HTTP call to the node, so it is made in a thread, never on the supervisor's event loop (the control
API's handlers and the controller's round post them). What a node does not take yet (its emulator is still
starting) is owed and said again each tick with the original deadline, as a real notice waits in the metadata
service for an instance that boots late.
"""

from __future__ import annotations

import asyncio
import time

from spotstack.runtime.local import node_api
from spotstack.runtime.local.replica import Node


class Postbox:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self._side: set[asyncio.Task[None]] = set()

    def post(self, node: Node, what: str) -> None:
        node.owed = what
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to block: say it here
            self._took(node, what, self._say(node, what), late=False)
            return
        node.posting = True
        task = loop.create_task(self._deliver(node, what, late=False))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def deliver_owed(self, nodes: list[Node]) -> None:
        for n in [n for n in nodes if n.owed is not None and not n.posting]:
            assert n.owed is not None
            await self._deliver(n, n.owed, late=True)

    @staticmethod
    def _say(node: Node, what: str) -> bool:
        if what == "notice" and node.kill_at is not None:
            return node_api.notice(node, node.kill_at)
        return node_api.terminating(node)

    async def _deliver(self, node: Node, what: str, late: bool) -> None:
        try:
            self._took(node, what, await asyncio.to_thread(self._say, node, what), late)
        finally:
            node.posting = False

    def _took(self, node: Node, what: str, took: bool, late: bool) -> None:
        if took and node.owed == what:
            if late:
                self.events.append(f"{time.strftime('%H:%M:%S')} {node.name} took its {what} late (it was starting)")
            node.owed = None
