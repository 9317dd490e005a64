"""The Chalice application: the one object that Lambda runs and that `agistack dev` serves locally.

It only registers the blueprints, one per resource (``routes/``); each route there states its access
rule, and its handler parses, calls a use case and shapes the answer.
"""

from __future__ import annotations

import os

from chalice.app import Chalice

from functions.platform.backups import routes as backups
from functions.platform.http import install
from functions.platform.snapstart import register_hooks
from functions.platform.telemetry import configure_logging
from functions.stepperslife.routes import events, health, images, me, processing, push, registrations, users
from shared.envelope import STEPPERSLIFE

app = Chalice(app_name="agistack-api")
app.register_blueprint(health.bp)  # GET /healthz
app.register_blueprint(users.bp)  # POST /users, POST /auth/login
app.register_blueprint(events.bp)  # /events, /events/search, /events/{event_id}
app.register_blueprint(registrations.bp)  # /events/{event_id}/registrations...; reconcile_seat_counters
app.register_blueprint(me.bp)  # /me/preferences, /me/recommendations, /me/registrations; send_daily_digest
app.register_blueprint(images.bp)  # POST /events/{event_id}/images and the image_uploaded queue handler
app.register_blueprint(processing.bp)  # domain-events queue handler; relay_outbox and pruning schedules
app.register_blueprint(push.bp)  # POST and DELETE /push/subscriptions
# Both databases' backups, drills and freshness check (the platform's; registered by this app only).
app.register_blueprint(backups.bp)
install(app)  # unknown paths 404, Chalice's own answers in the error shape
app.log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
configure_logging(STEPPERSLIFE)  # JSON lines (Powertools) with the service and the trace id
register_hooks()  # SnapStart: drop connections before the snapshot and after each restore
