"""Alarms on one SNS topic and a dashboard: what cdk/monitoring.py promises an operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions.platform import topology
from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow


def alarms(synth: Synth) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in synth.of_type("AWS::CloudWatch::Alarm").items()}


def alarms_on(synth: Synth, metric_name: str) -> list[dict[str, Any]]:
    return [a for a in alarms(synth).values() if a.get("MetricName") == metric_name]


def test_every_alarm_notifies_the_one_topic_which_has_no_subscriber_by_default(synth: Synth) -> None:
    (topic_id,) = synth.of_type("AWS::SNS::Topic")
    assert topic_id == synth.logical_id(synth.stack.monitoring.topic)
    assert not synth.of_type("AWS::SNS::Subscription")
    found = alarms(synth)
    assert len(found) == len(synth.stack.monitoring.alarms)
    for logical_id, alarm in found.items():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}], logical_id


def test_a_message_in_any_dlq_and_an_old_message_in_any_queue_alarm(synth: Synth) -> None:
    dlq_alarms = alarms_on(synth, "ApproximateNumberOfMessagesVisible")
    queue_names = {q["Properties"]["QueueName"]: k for k, q in synth.of_type("AWS::SQS::Queue").items()}
    watched = {json.dumps(a["Dimensions"]) for a in dlq_alarms}
    for queue in topology.QUEUES:
        dlq_id = queue_names[queue.dlq_name]
        assert any(f'"{dlq_id}", "QueueName"' in dims for dims in watched), queue.dlq_name
    assert all(a["Threshold"] == 1 and a["Statistic"] == "Maximum" for a in dlq_alarms)
    age_alarms = alarms_on(synth, "ApproximateAgeOfOldestMessage")
    aged = {json.dumps(a["Dimensions"]) for a in age_alarms}
    for queue in topology.QUEUES:
        assert any(f'"{queue_names[queue.name]}", "QueueName"' in dims for dims in aged), queue.name
    assert len(dlq_alarms) == len(age_alarms) == len(topology.QUEUES)


def test_every_function_alarms_on_errors_and_throttles(synth: Synth) -> None:
    functions = set(synth.of_type("AWS::Serverless::Function"))
    for metric_name in ("Errors", "Throttles"):
        watched = {
            a["Dimensions"][0]["Value"]["Ref"]
            for a in alarms_on(synth, metric_name)
            if a["Namespace"] == "AWS/Lambda" and a["Dimensions"][0]["Name"] == "FunctionName"
        }
        assert watched == functions, metric_name


def test_each_api_alarms_on_its_5xx_rate_and_p99_latency(synth: Synth) -> None:
    titles = {
        api["Properties"]["DefinitionBody"]["info"]["title"] for api in synth.of_type("AWS::Serverless::Api").values()
    }
    assert len(titles) == 2
    rates = alarms_on(synth, "5XXError")
    latencies = alarms_on(synth, "Latency")
    for found in (rates, latencies):
        assert {a["Namespace"] for a in found} == {"AWS/ApiGateway"}
        assert {next(d["Value"] for d in a["Dimensions"] if d["Name"] == "ApiName") for a in found} == titles
        assert all({"Name": "Stage", "Value": "api"} in a["Dimensions"] for a in found)
    assert all(a["Statistic"] == "Average" and 0 < a["Threshold"] < 1 for a in rates)
    assert all(a["ExtendedStatistic"] == "p99" for a in latencies)


def test_the_stale_drill_alarms_go_to_the_topic_and_the_dashboard_shows_every_alarm(synth: Synth) -> None:
    stale = alarms_on(synth, "HoursSinceSuccessfulDrill")
    assert stale and all(a["AlarmActions"] for a in stale)
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for logical_id in alarms(synth):
        assert f'"Fn::GetAtt": ["{logical_id}", "Arn"]' in body, logical_id
    for metric_name in ("ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "Errors"):
        assert metric_name in body
    for metric_name in ("Throttles", "5XXError", "Latency"):
        assert metric_name in body
    # The backup alarms each have a graph of their own (an alarm widget), besides the status list.
    for alarm in synth.stack.backups.alarms:
        logical_id = synth.logical_id(alarm)
        assert body.count(f'"Fn::GetAtt": ["{logical_id}", "Arn"]') == 2, logical_id


def test_the_alarm_email_context_subscribes_that_address(tmp_path: Path) -> None:
    from aws_cdk.assertions import Template

    from cdk.main import build_app

    _, stack = build_app(outdir=str(tmp_path), context={"agistack:alarmEmail": "ops@example.com"})
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::SNS::Subscription", 1)
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "email",
            "Endpoint": "ops@example.com",
            "TopicArn": {"Ref": stack.get_logical_id(stack.monitoring.topic.node.default_child)},
        },
    )
