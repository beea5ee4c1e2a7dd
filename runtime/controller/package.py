"""The files of the controller's function package on each cloud: this package's controller modules, nothing else.

AWS Lambda imports them and boto3 (the Python runtime's); the component zips them (`pulumi.AssetArchive`) and a
test imports the archive in a fresh interpreter with nothing else on the path. A Cloud Run function (GCP) also
gets a `main.py` naming the entry point and a `requirements.txt` for Google's client libraries; Function Compute
(Alibaba) needs nothing beyond the standard library (its adaptor signs its own RPC calls).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Cloud = Literal["aws", "gcp", "alicloud"]
RUNTIME = Path(__file__).resolve().parents[1]
"""The `spotstack.runtime` package folder."""
COMMON = (
    "__init__.py",
    "clouds.py",
    "controller/__init__.py",
    "controller/decide.py",
    "controller/state.py",
    "controller/round.py",
    "controller/rollout.py",
    "controller/regions.py",
    "controller/invocation.py",
    "controller/adaptors/__init__.py",
)
PER_CLOUD: dict[Cloud, tuple[str, ...]] = {
    "aws": ("controller/aws_lambda.py", "controller/adaptors/aws.py"),
    "gcp": ("controller/gcp_function.py", "controller/adaptors/gcp.py"),
    "alicloud": (
        "controller/alicloud_function.py",
        "controller/adaptors/alicloud.py",
        "controller/adaptors/oss.py",
        "objectget.py",
        "secrets.py",
    ),
}
HANDLER = "spotstack.runtime.controller.aws_lambda.handler"
ALICLOUD_HANDLER = "spotstack.runtime.controller.alicloud_function.handler"
GCP_ENTRY_POINT = "handler"
GCP_MAIN = "from spotstack.runtime.controller.gcp_function import handler  # noqa: F401 - the entry point\n"
GCP_REQUIREMENTS = "google-cloud-compute>=1.19,<2\ngoogle-cloud-storage>=2.14,<4\n"


def function_files(cloud: Cloud) -> dict[str, Path]:
    """Archive path -> file on disk. `spotstack` itself is a namespace package: it has no `__init__.py`."""
    return {f"spotstack/runtime/{m}": RUNTIME / m for m in COMMON + PER_CLOUD[cloud]}


def lambda_files() -> dict[str, Path]:
    return function_files("aws")
