"""The files of the controller's function package (AWS Lambda): this package's controller modules, nothing else.

The function imports only these and boto3, which the Lambda Python runtime provides; the component zips them
(`pulumi.AssetArchive`) and a test imports the archive in a fresh interpreter with nothing else on the path.
"""

from __future__ import annotations

from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1]
"""The `spotstack.runtime` package folder."""
MODULES = (
    "__init__.py",
    "controller/__init__.py",
    "controller/decide.py",
    "controller/state.py",
    "controller/round.py",
    "controller/aws_lambda.py",
    "controller/adaptors/__init__.py",
    "controller/adaptors/aws.py",
)
HANDLER = "spotstack.runtime.controller.aws_lambda.handler"


def lambda_files() -> dict[str, Path]:
    """Archive path -> file on disk. `spotstack` itself is a namespace package: it has no `__init__.py`."""
    return {f"spotstack/runtime/{m}": RUNTIME / m for m in MODULES}
