"""Complete the AWS Auto Scaling termination lifecycle action, with heartbeats while draining.

moto implements neither CompleteLifecycleAction nor RecordLifecycleActionHeartbeat, so these calls
are tested at the botocore level (Stubber) against the real API model.
"""

from __future__ import annotations

import asyncio
from typing import Any


class AsgLifecycle:
    name = "aws-asg-lifecycle"

    def __init__(
        self,
        group_name: str,
        hook_name: str,
        instance_id: str,
        region: str | None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.group_name, self.hook_name, self.instance_id = group_name, hook_name, instance_id
        if client is None:
            import boto3

            client = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
        self._client = client

    def _ids(self) -> dict[str, str]:
        return {
            "AutoScalingGroupName": self.group_name,
            "LifecycleHookName": self.hook_name,
            "InstanceId": self.instance_id,
        }

    async def heartbeat(self) -> None:
        await asyncio.to_thread(self._client.record_lifecycle_action_heartbeat, **self._ids())

    async def complete(self) -> None:
        await asyncio.to_thread(self._client.complete_lifecycle_action, LifecycleActionResult="CONTINUE", **self._ids())
