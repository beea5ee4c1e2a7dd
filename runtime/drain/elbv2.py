"""Leave an AWS ELBv2 target group (ALB/NLB). boto3 is imported lazily: only AWS nodes need it."""

from __future__ import annotations

import asyncio
from typing import Any


class Elbv2Rotation:
    name = "elbv2"

    def __init__(
        self,
        target_group_arn: str,
        instance_id: str,
        port: int | None,
        region: str | None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.target_group_arn, self.instance_id, self.port = target_group_arn, instance_id, port
        if client is None:
            import boto3

            client = boto3.client("elbv2", region_name=region, endpoint_url=endpoint_url)
        self._client = client

    def _target(self) -> dict[str, Any]:
        target: dict[str, Any] = {"Id": self.instance_id}
        if self.port is not None:
            target["Port"] = self.port
        return target

    async def leave(self) -> None:
        # The ALB stops sending new requests at once and keeps open ones for the deregistration delay.
        await asyncio.to_thread(
            self._client.deregister_targets, TargetGroupArn=self.target_group_arn, Targets=[self._target()]
        )
