"""AWS scale-in protection for a busy node: while its worker runs a task, the Auto Scaling group's own scale-in
passes it by (`SetInstanceProtection`), so a scale-in ends idle replicas first and never cuts a task short.
The controller's choice prefers idle replicas too (`decide`: `Replica.busy`, read from the same flag)."""

from __future__ import annotations

import asyncio
from typing import Any


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
