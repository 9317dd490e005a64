"""AGI Staffers' domain events: the topics its use cases announce through the platform's outbox, all
consumed from the provisioning queue (``topology.AGI_PROVISIONING``)."""

from __future__ import annotations

from functions.agistaffers.services.saga import DUE_TOPIC
from functions.platform.outbox import Outbox

WELCOME_TOPIC = "site.welcome"
CUSTOMER_STATUS_TOPIC = "customer.status_changed"
ALERT_TOPIC = "monitoring.alert"
TOPICS = (DUE_TOPIC, WELCOME_TOPIC, CUSTOMER_STATUS_TOPIC, ALERT_TOPIC)

outbox = Outbox(TOPICS)
