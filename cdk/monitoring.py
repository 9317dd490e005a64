"""What an operator must know, as CloudWatch alarms on one SNS topic, and a dashboard of the same.

Alarms: a message in any dead-letter queue (a message that failed every retry: nothing else will
tell); the oldest message of a work queue older than QUEUE_AGE_ALARM (its consumer is stuck or
failing); any function error or throttle (the SQS handlers report failed messages as partial batch
failures, so a Lambda error is a crash, a timeout or an import failure); each product API's 5xx rate
and p99 latency; and the backup path's stale-drill alarms (cdk/backups.py), which this topic also
carries. Every alarm notifies the one topic; its e-mail subscription is the context parameter
``agistack:alarmEmail`` (empty: the topic exists without a subscriber, e.g. for a chat integration
subscribed by hand). Missing data is "not breaching" except where cdk/backups.py says otherwise:
an idle queue or function publishes nothing.

The dashboard shows the metrics behind every alarm, plus the alarms' states, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

if TYPE_CHECKING:
    from aws_cdk import aws_sqs as sqs

    from cdk.product import ProductApi

# cdk.json context: the e-mail address alarms are sent to ("" or absent: no subscription).
ALARM_EMAIL_CONTEXT = "agistack:alarmEmail"
FIVE_MINUTES = cdk.Duration.minutes(5)
# The oldest message of a work queue: well past a few visibility timeouts of its consumer.
QUEUE_AGE_ALARM = cdk.Duration.minutes(15)
# API Gateway's 5XXError average is the fraction of requests answered with a 5xx.
API_5XX_RATE = 0.01
API_P99_LATENCY_MS = 3000
# Consecutive 5-minute periods before an API alarm fires: one slow burst is not an incident.
API_EVALUATION_PERIODS = 3


class Monitoring(Construct):
    """The alarm topic, the alarms (plus ``extra_alarms`` made elsewhere) and the dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Sequence[sqs.Queue],
        products: Sequence[ProductApi],
        extra_alarms: Sequence[cloudwatch.Alarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="agistack alarms", enforce_ssl=True)
        email = self.node.try_get_context(ALARM_EMAIL_CONTEXT) or ""
        if not isinstance(email, str):
            raise ValueError(f"context {ALARM_EMAIL_CONTEXT} must be an e-mail address or empty")
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self.alarms: list[cloudwatch.Alarm] = []
        self._widgets: list[cloudwatch.IWidget] = []
        self._queues(queues)
        for product in products:
            self._functions(product)
            self._api(product)
        self.alarms.extend(extra_alarms)
        self._widgets.extend(
            cloudwatch.AlarmWidget(title=alarm.node.id, alarm=alarm, width=8) for alarm in extra_alarms
        )
        action = cloudwatch_actions.SnsAction(self.topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=cdk.Stack.of(self).stack_name)
        # The states of every alarm first, then the metrics behind them.
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="agistack alarms", alarms=list(self.alarms), width=24, height=8),
            *self._widgets,
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        description: str,
        threshold: float,
        evaluation_periods: int = 1,
    ) -> cloudwatch.Alarm:
        alarm = metric.create_alarm(
            self,
            construct_id,
            alarm_description=description,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.alarms.append(alarm)
        return alarm

    def _queues(self, queues: Sequence[sqs.Queue]) -> None:
        for queue in queues:
            name = queue.node.id.removesuffix("Queue")
            dead_letter = queue.dead_letter_queue
            assert dead_letter is not None, f"{queue.node.path} has no dead-letter queue"
            in_dlq = dead_letter.queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=cdk.Duration.minutes(1)
            )
            age = queue.metric_approximate_age_of_oldest_message(statistic="Maximum", period=FIVE_MINUTES)
            self._alarm(f"{name}DeadLetters", in_dlq, description=f"{name}: a message in the DLQ", threshold=1)
            self._alarm(
                f"{name}OldestMessage",
                age,
                description=f"{name}: oldest message older than {QUEUE_AGE_ALARM.to_minutes():.0f} min",
                threshold=QUEUE_AGE_ALARM.to_seconds(),
            )
            self._widgets.extend(
                [
                    cloudwatch.GraphWidget(title=f"{name}: messages in the DLQ", left=[in_dlq], width=12),
                    cloudwatch.GraphWidget(title=f"{name}: age of the oldest message (s)", left=[age], width=12),
                ]
            )

    def _functions(self, product: ProductApi) -> None:
        errors: list[cloudwatch.IMetric] = []
        throttles: list[cloudwatch.IMetric] = []
        for handler, function in sorted(product.functions_by_handler().items()):
            label = f"{product.product}.{handler}"
            for metric_name, collected in (("Errors", errors), ("Throttles", throttles)):
                metric = cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name=metric_name,
                    dimensions_map={"FunctionName": function.ref},
                    statistic="Sum",
                    period=FIVE_MINUTES,
                )
                # A label only on the graph's copy: on the alarm's it would become a metric-math alarm.
                collected.append(metric.with_(label=handler))
                self._alarm(
                    f"{_pascal(product.product)}{_pascal(handler)}{metric_name}",
                    metric,
                    description=f"{label}: Lambda {metric_name.lower()}",
                    threshold=1,
                )
        self._widgets.extend(
            [
                cloudwatch.GraphWidget(title=f"{product.product}: function errors", left=errors, width=12),
                cloudwatch.GraphWidget(title=f"{product.product}: function throttles", left=throttles, width=12),
            ]
        )

    def _api(self, product: ProductApi) -> None:
        api_name, stage = product.rest_api_name_and_stage()
        dimensions = {"ApiName": api_name, "Stage": stage}
        rate = cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name="5XXError",
            dimensions_map=dimensions,
            statistic="Average",
            period=FIVE_MINUTES,
        )
        latency = cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name="Latency",
            dimensions_map=dimensions,
            statistic="p99",
            period=FIVE_MINUTES,
        )
        prefix = _pascal(product.product)
        self._alarm(
            f"{prefix}Api5xxRate",
            rate,
            description=f"{product.product} API: 5xx rate at or above {API_5XX_RATE:.0%}",
            threshold=API_5XX_RATE,
            evaluation_periods=API_EVALUATION_PERIODS,
        )
        self._alarm(
            f"{prefix}ApiP99Latency",
            latency,
            description=f"{product.product} API: p99 latency at or above {API_P99_LATENCY_MS} ms",
            threshold=API_P99_LATENCY_MS,
            evaluation_periods=API_EVALUATION_PERIODS,
        )
        self._widgets.extend(
            [
                cloudwatch.GraphWidget(title=f"{product.product} API: 5xx rate", left=[rate], width=12),
                cloudwatch.GraphWidget(title=f"{product.product} API: p99 latency (ms)", left=[latency], width=12),
            ]
        )


def _pascal(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))
