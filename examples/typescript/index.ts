// spotstack from TypeScript: `pulumi package add ../../plugin` generates the `@pulumi/spotstack` SDK from the
// component provider's schema and adds it to package.json. The fleet takes this program's own certificate.
import * as aws from "@pulumi/aws";
import * as spotstack from "@pulumi/spotstack";

const cert = new aws.acm.Certificate("llm", { domainName: "llm.example.com", validationMethod: "DNS" });

const fleet = new spotstack.GpuFleet("llm", {
    // The fleet spec, as in a stack's `spotstack:fleets` (README, "The fleet spec").
    spec: {
        "name": "llm",
        "cloud": "aws",
        "region": "us-east-1",
        "zones": ["us-east-1a", "us-east-1b"],
        "instances": [
            {"type": "g6.xlarge", "spot": {"bid": 0.5}},
            {"type": "g5.xlarge", "spot": {"bid": 0.5}},
            {"type": "g6e.xlarge", "on_demand": {}}
        ],
        "capacity": {"min": 1, "max": 4, "base_on_demand": 1, "dynamic_on_demand_fallback": true},
        "service": {"port": 8000, "readiness_path": "/health"},
        "image": {"repository": "vllm/vllm-openai", "tag": "v0.6.3", "registry": "docker.io"}
    },
    certificate: cert.arn,
});

export const endpoint = fleet.endpoint;
export const warnings = fleet.warnings;
