"""AlicloudImageRegistry: a Container Registry Enterprise Edition instance, namespace and repository.

Image acceleration (on-demand loading of image layers, so a node starts the container before the
whole image is pulled) is a feature of Enterprise Edition repositories; the provider has no
argument for it, so turn it on once per repository in the ACR console (Repository > Image
Acceleration) or with the ACR API after `pulumi up`. The Advanced edition declared here supports it.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_alicloud as ali

from spotstack.components import tokens


class AlicloudImageRegistryArgs(TypedDict, total=False):
    namespace: str
    repository: str
    instance_id: str
    """An existing ACR EE instance to hold the namespace and repository; without it, one is bought."""


class AlicloudImageRegistry(pulumi.ComponentResource):
    instance_id: pulumi.Output[str]
    instance_name: pulumi.Output[str]
    """The instance's name: its registry domains are `<name>-registry[-vpc].<region>.cr.aliyuncs.com`."""
    repository: str

    def __init__(self, name: str, args: AlicloudImageRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(tokens.ALICLOUD_IMAGE_REGISTRY, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns_name = args.get("namespace", "spotstack")
        repo_name = args.get("repository", name).replace("/", "-")
        existing = args.get("instance_id")
        if existing is not None:
            found = ali.cs.get_registry_enterprise_instances_output(
                ids=[existing], enable_details=False, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            instance_id: pulumi.Output[str] = pulumi.Output.from_input(existing)
            self.instance_name = found.instances.apply(lambda found: found[0].name)
        else:
            inst = ali.cr.RegistryEnterpriseInstance(
                f"{name}-instance",
                instance_name=f"{name}-acr",
                instance_type="Advanced",
                payment_type="Subscription",  # ACR EE is sold by subscription only
                period=1,
                # Manual renewal: a forgotten stack must not renew itself; protect: `pulumi destroy` cannot
                # release a prepaid instance anyway, so it refuses instead of pretending.
                renewal_status="ManualRenewal",
                image_scanner="ACR",
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
            )
            pulumi.log.warn(
                f"{name}: buys an ACR Enterprise Edition instance, a monthly subscription (manual renewal, "
                "protected); set image.registry_instance to reuse an existing one instead",
                resource=self,
            )
            instance_id = inst.id
            self.instance_name = inst.instance_name
        ns = ali.cs.RegistryEnterpriseNamespace(
            f"{name}-namespace",
            instance_id=instance_id,
            name=ns_name,
            auto_create=False,
            default_visibility="PRIVATE",
            opts=child,
        )
        ali.cs.RegistryEnterpriseRepo(
            f"{name}-repo",
            instance_id=instance_id,
            namespace=ns.name,
            name=repo_name,
            repo_type="PRIVATE",
            summary="spotstack model server",
            tag_immutability=True,
            opts=child,
        )
        self.instance_id = instance_id
        self.repository = f"{ns_name}/{repo_name}"
        self.register_outputs({"instance_id": self.instance_id, "instance_name": self.instance_name})
