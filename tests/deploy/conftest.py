"""The synthesized CDK app, once per session: packaging both Chalice apps takes most of a minute cold."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from cdk.main import REPO_ROOT, build_app, set_env_defaults


class Synth:
    """The synthesized stack, its template as JSON and logical IDs of the constructs under test."""

    def __init__(self, context: dict[str, Any] | None = None, variant: str = "") -> None:
        """``context``: over cdk.json's (a deploy option's variant); ``variant`` names its own cloud
        assembly directory, so that one variant's synth never rewrites another's packages."""
        from aws_cdk.assertions import Template

        outdir = os.environ.get("AGISTACK_CDK_TEST_OUTDIR") or str(REPO_ROOT / "cdk.out" / "pytest")
        outdir += f"-{variant}" if variant else ""
        self.outdir = outdir
        self.environ_before = dict(os.environ)
        self.app, self.stack = build_app(outdir=outdir, context=context)
        self.template = Template.from_stack(self.stack)
        self.json: dict[str, Any] = dict(self.template.to_json())
        self.resources: dict[str, dict[str, Any]] = self.json["Resources"]

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def functions_of(self, product: Any) -> dict[str, dict[str, Any]]:
        """The Lambda functions of one product's Chalice app, by logical ID."""
        ids = {str(self.stack.resolve(function.logical_id)) for function in product.functions()}
        assert ids, f"the {product.product} Chalice app produced no Lambda function"
        return {logical_id: self.resources[logical_id] for logical_id in ids}


@pytest.fixture(scope="session")
def synth() -> Iterator[Synth]:
    set_env_defaults()
    yield Synth()
