"""CDK app entry: `python -m cdk.main` (what cdk.json runs). Not named app.py: see FACTS.md.

Writes the cloud assembly to $CDK_OUTDIR (set by the cdk CLI) or ./cdk.out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aws_cdk as cdk

    from cdk.stack import AgistackStack

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"

# Chalice's packager builds a boto3 session (needs a region) and must not probe EC2 instance
# metadata for one; Node 20 makes jsii print a large end-of-life banner on every run.
ENV_DEFAULTS = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}


def set_env_defaults() -> None:
    """Must run before aws_cdk or chalice is imported."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def cdk_json_context() -> dict[str, Any]:
    """The `context` of cdk.json, so that running this module directly (or from pytest) synthesizes
    what `cdk synth` does; the CLI passes the same values and they take precedence anyway."""
    data = json.loads(CDK_JSON.read_text(encoding="utf-8"))
    context = data.get("context", {})
    if not isinstance(context, dict):
        raise ValueError("cdk.json: context must be an object")
    return context


def build_app(outdir: str | None = None, context: dict[str, Any] | None = None) -> tuple[cdk.App, AgistackStack]:
    """``context``: values over cdk.json's (what ``cdk synth -c key=value`` does)."""
    set_env_defaults()
    import aws_cdk as cdk

    from cdk.stack import AgistackStack

    app = cdk.App(
        outdir=outdir or os.environ.get("CDK_OUTDIR") or str(REPO_ROOT / "cdk.out"),
        context={**cdk_json_context(), **(context or {})},
    )
    stage = str(app.node.try_get_context("agistack:stage") or "prod")
    origins = app.node.try_get_context("agistack:allowedOrigins") or []
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ValueError("context agistack:allowedOrigins must be a list of strings")
    stack = AgistackStack(
        app,
        f"agistack-{stage}",
        stage=stage,
        allowed_origins=origins,
        description=f"agistack {stage}: the products' Chalice APIs and handlers, buckets, queues, event bus",
        # Environment-agnostic on purpose: the template is the same offline and at deploy time, and
        # `cdk deploy` targets the account and region of the caller's AWS profile.
    )
    # A proxy's target group takes no tags (CloudFormation refuses the property).
    untaggable = ["AWS::RDS::DBProxyTargetGroup"]
    cdk.Tags.of(app).add("project", "agistack", exclude_resource_types=untaggable)
    cdk.Tags.of(app).add("stage", stage, exclude_resource_types=untaggable)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
