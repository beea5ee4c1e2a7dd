"""AWS: a decision becomes the desired sizes of the fleet's two Auto Scaling groups.

The main group's mixed-instances policy already keeps the base and the percentage on-demand and
picks spot types in priority order, so it gets base + share + spot; the fallback group (100%
on-demand) gets the fallback count. boto3 is imported lazily.
"""

from __future__ import annotations

import asyncio
from typing import Any

from spotstack.runtime.controller.decide import Decision


class AsgAdaptor:
    def __init__(
        self,
        main_group: str,
        fallback_group: str | None,
        region: str | None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.main_group, self.fallback_group = main_group, fallback_group
        if client is None:
            import boto3

            client = boto3.client("autoscaling", region_name=region, endpoint_url=endpoint_url)
        self._client = client

    def sizes(self, d: Decision) -> dict[str, int]:
        main = d.wanted_on_demand - d.wanted_fallback + d.wanted_spot
        out = {self.main_group: main}
        if self.fallback_group is not None:
            out[self.fallback_group] = d.wanted_fallback
        return out

    async def apply(self, d: Decision) -> dict[str, int]:
        sizes = self.sizes(d)
        for group, size in sizes.items():
            # HonorCooldown=False: the controller acts on spot events, which do not wait for cooldowns.
            await asyncio.to_thread(
                self._client.set_desired_capacity, AutoScalingGroupName=group, DesiredCapacity=size, HonorCooldown=False
            )
        return sizes
