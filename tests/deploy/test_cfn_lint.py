"""cfn-lint accepts the synthesized template (the SAM transform included, offline).

cfn-lint checks every resource's properties against the CloudFormation schemas of the region, so a
typo in a property override or a value CloudFormation would refuse fails here, not in a deploy.
Linted for the region the stack deploys to by default (cdk.main's AWS_DEFAULT_REGION): a few resource
types (AWS Backup restore testing) do not exist in every partition.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdk.main import ENV_DEFAULTS
from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow

# Warnings accepted, each on resources CDK generates itself (not ours to change):
# W3005: the bucket-notification custom resource's DependsOn repeats what its GetAtt already orders
# (so do the VPC's default-security-group custom resource and the RDS Proxy's target group).
ACCEPTED_WARNINGS = {"W3005"}


def lint_problems(template: dict[str, Any]) -> list[str]:
    """cfn-lint's errors and unexpected warnings for a synthesized template (printed: how many)."""
    from cfnlint.api import lint  # type: ignore[import-untyped]

    matches = lint(json.dumps(template), regions=[ENV_DEFAULTS["AWS_DEFAULT_REGION"]])
    findings = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]
    problems = [
        finding
        for match, finding in zip(matches, findings, strict=True)
        if match.rule.id[0] == "E" or (match.rule.id[0] == "W" and match.rule.id not in ACCEPTED_WARNINGS)
    ]
    print(f"\ncfn-lint: {len(matches)} findings, {len(problems)} errors or unexpected warnings")
    return problems


def test_cfn_lint_finds_no_error_and_no_warning_in_the_template(synth: Synth) -> None:
    problems = lint_problems(synth.json)
    assert not problems, "\n".join(problems)
