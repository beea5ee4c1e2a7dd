"""A spot GPU fleet in a VPC this program builds: the VPC's and subnets' ids are Outputs, passed in as they are.

spotstack plan --project examples/aws-own-vpc --stack dev     # offline: the tree, the cost, the warnings
pulumi up -s dev                                              # for real, from this folder
"""

import pulumi
import pulumi_aws as aws

from spotstack.components.aws.fleet import AwsGpuFleet, AwsGpuFleetArgs
from spotstack.components.aws.model_store import AwsModelStore
from spotstack.components.validate import validate_fleets

config = pulumi.Config()
region = aws.config.region or "us-east-1"
zones = [f"{region}a", f"{region}b"]

vpc = aws.ec2.Vpc("llm-vpc", cidr_block="10.20.0.0/16", enable_dns_hostnames=True, enable_dns_support=True)
gateway = aws.ec2.InternetGateway("llm-igw", vpc_id=vpc.id)
routes = aws.ec2.RouteTable(
    "llm-public", vpc_id=vpc.id, routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)]
)
subnets = []
for i, zone in enumerate(zones):
    subnet = aws.ec2.Subnet(
        f"llm-{zone}",
        vpc_id=vpc.id,
        availability_zone=zone,
        cidr_block=f"10.20.{i}.0/24",
        map_public_ip_on_launch=True,  # nodes reach the registry and the model bucket without a NAT gateway
    )
    aws.ec2.RouteTableAssociation(f"llm-{zone}-public", subnet_id=subnet.id, route_table_id=routes.id)
    subnets.append(subnet)

# The model's files (nodes load them from here and from each other) and the agent the fleet publishes for its nodes.
bucket = config.require("modelBucket")
store = AwsModelStore("llm-models", {"bucket": bucket, "region": region})

repository, _, tag = config.get("image", "vllm/vllm-openai:v0.6.3").partition(":")
(spec,), warnings = validate_fleets(
    [
        {
            "name": "llm",
            "cloud": "aws",
            "region": region,
            "zones": zones,
            "instances": [
                {"type": "g6.xlarge", "spot": {"bid": 0.5}},  # 1x L4
                {"type": "g5.xlarge", "spot": {"bid": 0.5}},  # 1x A10G
                {"type": "g6e.xlarge", "on_demand": {}},  # 1x L40S: the base and the fallback
            ],
            "capacity": {"min": 1, "max": 4, "base_on_demand": 1, "dynamic_on_demand_fallback": True},
            "service": {"port": 8000, "readiness_path": "/health"},
            "scaling": {"target_qps_per_replica": 4},
            "image": {"repository": repository, "tag": tag or "latest", "registry": "docker.io"},
            "model_cache": {"bucket": bucket, "prefix": "llm/", "create_bucket": False},  # declared above
        }
    ]
)
for w in warnings:
    pulumi.log.warn(str(w))

fleet = AwsGpuFleet(
    "llm", AwsGpuFleetArgs(spec=spec, vpc_id=vpc.id, subnet_ids=[s.id for s in subnets], model_store=store)
)
pulumi.export("endpoint", fleet.load_balancer_dns)
pulumi.export("node_security_group", fleet.node_security_group_id)
