"""moto's server, with its SQS DeleteMessage made safe beside concurrent calls.

moto (5.2) deletes a message by building a new list of the queue's other messages and assigning it back, outside
the lock its SendMessage takes. moto's server answers each request in its own thread, so a SendMessage or a second
DeleteMessage that lands in between is undone: a sent message is lost, or a deleted one comes back in flight. Real
SQS does neither. The local fleet's nodes send and delete on the same queues at once (results, give-backs,
finished tasks), and a lost give-back is a lost task. `patch()` makes the delete remove the message in place under
the queue's lock; `python -m spotstack.runtime.local.motoserver` is `moto.server` with the patch applied.

    python -m spotstack.runtime.local.motoserver -H 127.0.0.1 -p PORT    (moto.server's arguments)
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any


def patch() -> None:
    """Replace moto's `Queue.delete_message` (this process's moto; idempotent)."""
    from moto.sqs import models
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    if getattr(models.Queue.delete_message, "spotstack_patched", False):
        return

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:  # the lock add_message appends under (a re-entrant Condition)
            if receipt_handle in self.deleted_messages:
                return  # deleted already: SQS answers a repeated delete with success
            found = [m for m in self._messages if m.had_receipt_handle(receipt_handle)]
            if not found:
                raise ReceiptHandleIsInvalid()
            for m in found:
                self.pending_messages.discard(m)
                self.deleted_messages.update(m.all_receipt_handles)
                # In place: a receive moving a message to the dead-letter queue removes in place too (no lock).
                with contextlib.suppress(ValueError):
                    self._messages.remove(m)

    delete_message.spotstack_patched = True  # type: ignore[attr-defined]
    models.Queue.delete_message = delete_message  # type: ignore[method-assign]


def argv(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that starts this server with this interpreter's moto (not whatever `moto_server` is first on PATH:
    another version, another venv)."""
    return [sys.executable, "-m", "spotstack.runtime.local.motoserver", "-H", host, "-p", str(port)]


def main(args: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:] if args is None else args)


if __name__ == "__main__":
    main()
