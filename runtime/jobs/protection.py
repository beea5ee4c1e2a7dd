"""AWS scale-in protection for a busy node: while its worker runs a task, the Auto Scaling group's own scale-in
passes it by (`SetInstanceProtection`), so a scale-in ends idle replicas first and never cuts a task short.
The controller's choice prefers idle replicas too (`decide`: `Replica.busy`, read from the same flag)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("spotstack.jobs")


class Protection(Protocol):
    """The cloud's scale-in protection for this node (AWS: instance protection in its Auto Scaling group)."""

    async def set(self, protected: bool) -> None: ...


class ProtectionKeeper:
    """Keeps the node protected from scale-in while `busy()` (any task runs): the cloud call only on a change,
    retried until it holds. Set `changed` when busy may have changed."""

    def __init__(self, protection: Protection, busy: Callable[[], bool]) -> None:
        self.protection, self.busy = protection, busy
        self.protected = False
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            want = self.busy()
            if want != self.protected:
                try:
                    await self.protection.set(want)
                    self.protected = want
                except Exception as exc:
                    log.warning("scale-in protection %s failed: %s", "on" if want else "off", exc)
                    await asyncio.sleep(2.0)
                    continue
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 5.0)


class AwsProtection:
    def __init__(
        self, group: str, instance_id: str, region: str | None, endpoint_url: str | None, client: Any = None
    ) -> None:
        self.group, self.instance_id = group, instance_id
        if client is None:
            import boto3

            client = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
        self.asg = client

    async def set(self, protected: bool) -> None:
        await asyncio.to_thread(
            self.asg.set_instance_protection,
            InstanceIds=[self.instance_id],
            AutoScalingGroupName=self.group,
            ProtectedFromScaleIn=protected,
        )
