"""An Alibaba fleet's scaling configurations (what ESS launches: types in order, market and bids, image, boot
document, role) and their drain hooks, one of each per group. Each configuration tags its instances with a digest
of what they were launched with: ESS changes a configuration in place, so the controller tells a stale instance
by that tag and rolls it (runtime/controller/rollout.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_alicloud as ali

from spotstack.components import node
from spotstack.components.alicloud import mapping
from spotstack.components.spec import FleetSpec
from spotstack.runtime.controller.adaptors.alicloud import CONFIG_TAG

ESS = ali.ess


def declare(
    name: str,
    spec: FleetSpec,
    groups: Sequence[ali.ess.ScalingGroup],
    m: mapping.Mix,
    security_group: pulumi.Input[str],
    role_name: pulumi.Input[str],
    user_data: pulumi.Output[str],
    child: pulumi.ResourceOptions,
    *,
    fleet_tag: str | None = None,
) -> list[ali.ess.ScalingConfiguration]:
    """The main group's configuration first, then the fallback group's (when it has one). `fleet_tag`: the
    instances' fleet tag (peer discovery's key; default `name`: across regions, the fleet's name in every region)."""
    configurations: list[ali.ess.ScalingConfiguration] = []
    for kind, g in zip(("", "fallback-"), groups, strict=False):
        on_demand_only = kind == "fallback-"
        # The fallback group stops and starts its instances: one type, as a stopped one restarts as itself.
        types = [spec.instances[0].type] if on_demand_only else [i.type for i in spec.instances]
        image_id = spec.machine_image or stock_image(types[0], child)
        strategy = "NoSpot" if on_demand_only else m.spot_strategy
        limits = [] if on_demand_only else list(m.spot_price_limits)
        launch: dict[str, object] = {"image": image_id, "types": types, "strategy": strategy, "limits": limits}
        configurations.append(
            ESS.ScalingConfiguration(
                f"{name}-{kind}config",
                scaling_group_id=g.id,
                scaling_configuration_name=f"{name}-{kind}config",
                instance_types=types,
                image_id=image_id,
                security_group_id=security_group,
                spot_strategy=strategy,
                spot_price_limits=[
                    ESS.ScalingConfigurationSpotPriceLimitArgs(instance_type=t, price_limit=p) for t, p in limits
                ]
                or None,
                role_name=role_name,
                user_data=user_data,
                system_disk_category="cloud_essd",
                system_disk_size=node.ROOT_VOLUME_GB,
                # The instances carry the digest: the controller rolls those launched from an older one.
                tags={**spec.tags, node.FLEET_TAG: fleet_tag or name, CONFIG_TAG: _digest(user_data, launch)},
                active=True,
                enable=True,
                force_delete=True,
                opts=child,
            )
        )
        ESS.LifecycleHook(
            f"{name}-{kind}drain",
            scaling_group_id=g.id,
            name=f"{name}-drain",
            lifecycle_transition="SCALE_IN",
            heartbeat_timeout=mapping.lifecycle_heartbeat_s(spec.service.drain_timeout),
            default_result="CONTINUE",
            opts=child,
        )
    return configurations


def _digest(user_data: pulumi.Output[str], launch: dict[str, object]) -> pulumi.Output[str]:
    def of(args: list[object]) -> str:
        text, image = args
        return mapping.config_digest(user_data=text, disk=node.ROOT_VOLUME_GB, **{**launch, "image": image})

    return pulumi.Output.all(user_data, launch["image"]).apply(of)


def stock_image(instance_type: str, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The most recent Ubuntu 22.04 system image of the region that the type can boot, looked up at `pulumi up`: a
    pinned build is retired in time, and its kernel may not match the driver packages of the day. The first boot's
    GPU set-up installs the driver for the kernel it finds. Pin one with `machine_image`."""
    found = ali.ecs.get_images_output(
        name_regex=mapping.STOCK_IMAGE_NAME,
        owners="system",
        most_recent=True,
        instance_type=instance_type,
        opts=pulumi.InvokeOptions(parent=child.parent, provider=child.provider),
    )
    image: pulumi.Output[str] = found.ids.apply(lambda ids: str(ids[0]) if ids else mapping.DEFAULT_IMAGE)
    return image
