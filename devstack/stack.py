"""`agistack dev`: the whole platform on one machine, in one process tree.

PostgreSQL, Redis and AWS come from DATABASE_URL / REDIS_URL / AWS_ENDPOINT_URL when set, else from
embedded servers; each product's API is served from the same Chalice app object that Lambda runs; the
gateway core is served by its CPython adapter; queues and schedules are wired as the cloud wires them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import aws_local, handlers, metrics
from devstack.products import PRODUCTS, Product
from devstack.services import RunningService, embedded_pg_bin_dir, start_moto, start_postgres, start_redis
from functions.platform.adapters.postgres import redact
from functions.platform.backups import composition as backups_composition
from functions.platform.config import Settings
from functions.platform.migrations import migrate_all

log = logging.getLogger("agistack.dev")

STATE_FILE = "stack.json"
LOCAL_MAIL_SENDER = "welcome@agistaffers.local"
LOCAL_ZONE_ID = "0000000000000000000000000000dev0"
LOCAL_DNS_TARGET = "192.0.2.10"  # TEST-NET-1: documentation only, never routed
# Locally every site is checked at least this often, so a flipped fake site goes down within seconds.
LOCAL_UPTIME_INTERVAL_SECONDS = "5"


class PortInUse(RuntimeError):
    pass


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path = Path(".agistack")
    host: str = "127.0.0.1"
    edge_port: int = 8787
    api_port: int = 8000
    agi_port: int = 8001
    metrics_port: int = 9464  # devstack/metrics.py
    scheduler: bool = True

    def port(self, product: Product) -> int:
        return self.agi_port if product.name == "agistaffers" else self.api_port


def ensure_port_free(host: str, port: int, what: str) -> None:
    # Binds as the servers do (SO_REUSEADDR): the last run's connections in TIME_WAIT do not count.
    from edge_workers.local_server import port_is_free

    if not port_is_free(host, port):
        raise PortInUse(f"port {port} on {host} is already in use ({what}); choose another with --{what}-port")


def kept(path: Path, make: Callable[[], str]) -> str:
    """A value made once and kept (mode 0600) in the data dir, so that it survives restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
    return path.read_text().strip()


def signing_secret(env: Mapping[str, str], data_dir: Path) -> str:
    """EDGE_SIGNING_SECRET, or one generated once so that sessions survive restarts."""
    if env.get("EDGE_SIGNING_SECRET"):
        return env["EDGE_SIGNING_SECRET"]
    return kept(data_dir / "edge-signing-secret", lambda: secrets.token_urlsafe(48))


def vapid_keys(env: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    """VAPID_* from the environment, or a key pair generated once, so that web push works locally."""
    if env.get("VAPID_PRIVATE_KEY") and env.get("VAPID_PUBLIC_KEY"):
        return {name: env[name] for name in ("VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY", "VAPID_SUBJECT") if env.get(name)}
    from functions.platform.adapters.webpush import generate_vapid_keys

    def make() -> str:
        private_key, public_key = generate_vapid_keys()
        return json.dumps({"VAPID_PRIVATE_KEY": private_key, "VAPID_PUBLIC_KEY": public_key})

    keys: dict[str, str] = json.loads(kept(data_dir / "vapid.json", make))
    return {**keys, "VAPID_SUBJECT": env.get("VAPID_SUBJECT", "mailto:dev@localhost")}


@dataclass
class DevStack:
    options: DevOptions
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    urls: dict[str, str] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)
    settings: Settings | None = None
    pumps: list[aws_local.QueuePump] = field(default_factory=list)

    def start(self) -> None:
        """Bring everything up; on any failure, what already started is stopped again."""
        options = self.options
        ensure_port_free(options.host, options.edge_port, "edge")
        ensure_port_free(options.host, options.api_port, "api")
        ensure_port_free(options.host, options.agi_port, "agi")
        ensure_port_free(options.host, options.metrics_port, "metrics")
        options.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _service(self, variable: str, starter: Callable[[], RunningService]) -> str:
        if self.env.get(variable):
            log.info("%s: using %s", variable, "configured endpoint")
            return self.env[variable]
        service = starter()
        self._stops.append(service.stop)
        return service.url

    def _start_all(self) -> None:
        options, data_dir = self.options, self.options.data_dir.resolve()
        pg_url = self._service("DATABASE_URL", lambda: start_postgres(data_dir / "postgres"))
        # The embedded server's own pg_dump/pg_restore (the machine's may be older than PostgreSQL 18).
        pg_bin_dir = self.env.get("PG_BIN_DIR") or (
            "" if self.env.get("DATABASE_URL") else str(embedded_pg_bin_dir() or "")
        )
        log.info("postgres ready at %s", redact(pg_url))
        applied = migrate_all(pg_url)
        log.info("databases migrated: %s", ", ".join(f"{db} (+{len(v)})" for db, v in applied.items()))
        redis_url = self._service("REDIS_URL", lambda: start_redis(data_dir / "redis"))
        log.info("redis ready at %s", redis_url)
        aws_url = self._service("AWS_ENDPOINT_URL", start_moto)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")  # moto accepts any credentials
        log.info("aws (s3, sqs, eventbridge) at %s", aws_url)

        secret = signing_secret(self.env, data_dir)
        self.settings = Settings.from_env(
            {
                **self.env,
                **vapid_keys(self.env, data_dir),
                **self._provisioning_fakes(),
                "DATABASE_URL": pg_url,
                "REDIS_URL": redis_url,
                "EDGE_SIGNING_SECRET": secret,
                "AWS_ENDPOINT_URL": aws_url,
                "PG_BIN_DIR": pg_bin_dir,
            }
        )
        self._stops.append(backups_composition.configure(self.settings).close)
        queue_urls = aws_local.ensure_resources(self.settings)
        log.info(
            "buckets %s, %s and queues %s ready",
            self.settings.aws.media_bucket,
            self.settings.aws.backup_bucket,
            ", ".join(queue_urls),
        )
        self.urls["metrics"], stop_metrics = metrics.serve(options.host, options.metrics_port)
        self._stops.append(stop_metrics)
        for product in PRODUCTS:
            self._stops.append(product.configure(self.settings).close)
            self._start_api(product)
            self._wire_handlers(product, queue_urls)
        media_url = self._start_media_cdn()
        self._start_edge(secret, media_url)
        self.urls.update(
            {
                "edge": f"http://{options.host}:{options.edge_port}",
                "api": self._api_url(PRODUCTS[0]),
                "agi": self._api_url(PRODUCTS[1]),
                "aws": aws_url,
                "media": media_url,
            }
        )
        state = {**self.urls, "database_url": pg_url, "redis_url": redis_url, "pg_bin_dir": pg_bin_dir}
        state_path = data_dir / STATE_FILE
        state_path.write_text(json.dumps(state, indent=2))
        state_path.chmod(0o600)
        self._stops.append(lambda: state_path.unlink(missing_ok=True))

    def _provisioning_fakes(self) -> dict[str, str]:
        """AGI Staffers' provisioning endpoints: the fake Portainer (which also serves the sites' HTTPS)
        and the fake Cloudflare DNS API, unless real ones are configured; and a local mail sender."""
        from devstack.fakes.cloudflare import FakeCloudflare
        from devstack.fakes.portainer import FakePortainer

        values = {
            "MAIL_SENDER": self.env.get("MAIL_SENDER") or LOCAL_MAIL_SENDER,
            "UPTIME_MAX_INTERVAL_SECONDS": self.env.get("UPTIME_MAX_INTERVAL_SECONDS") or LOCAL_UPTIME_INTERVAL_SECONDS,
        }
        if not self.env.get("PORTAINER_URL"):
            portainer = FakePortainer(secrets.token_urlsafe(24))
            self._stops.append(portainer.stop)
            values.update(
                {
                    "PORTAINER_URL": portainer.url,
                    "PORTAINER_API_KEY": portainer.api_key,
                    "SITE_PROBE_CONNECT_TO": portainer.ingress_address,
                    "SITE_PROBE_CA_FILE": portainer.ca_file,
                    "SITE_PROBE_ALLOW_HOSTS": "127.0.0.1",
                }
            )
            # The uptime checks reach the sites there too (the same explicit allow-list); smoke flips them.
            self.urls["fake_site_health"] = f"{portainer.url}/_fake/health"
            log.info("fake portainer at %s, sites' https at %s", portainer.url, portainer.ingress_address)
            log.info('flip a site\'s health: POST %s {"healthy": false}', self.urls["fake_site_health"])
        if not self.env.get("CLOUDFLARE_ZONE_ID"):
            token = self.env.get("CLOUDFLARE_API_TOKEN") or secrets.token_urlsafe(24)
            cloudflare = FakeCloudflare(token, LOCAL_ZONE_ID)
            self._stops.append(cloudflare.stop)
            values.update(
                {
                    "CLOUDFLARE_API_BASE": cloudflare.api_base,
                    "CLOUDFLARE_API_TOKEN": token,
                    "CLOUDFLARE_ZONE_ID": LOCAL_ZONE_ID,
                    "CLOUDFLARE_DNS_TARGET": LOCAL_DNS_TARGET,
                }
            )
            log.info("fake cloudflare dns at %s", cloudflare.api_base)
        return values

    def _api_url(self, product: Product) -> str:
        return f"http://{self.options.host}:{self.options.port(product)}"

    def _start_api(self, product: Product) -> None:
        from devstack.local_api import local_server

        server = local_server(product.app(), self.options.host, self.options.port(product))
        server.start()
        self._stops.append(server.stop)
        log.info("%s api (%s.app:app) on %s", product.name, product.package, self._api_url(product))

    def _wire_handlers(self, product: Product, queue_urls: dict[str, str]) -> None:
        app = product.app()
        assert self.settings is not None
        for handler in handlers.sqs_handlers(app):
            pump = aws_local.QueuePump(
                self.settings, queue_urls[handler.queue], handler.function, handler.name, handler.batch_size
            )
            pump.start()
            self.pumps.append(pump)
            self._stops.append(pump.stop)
            log.info("queue %s → handler %s", handler.queue, handler.name)
        schedules = handlers.scheduled_handlers(app)
        if self.options.scheduler:
            scheduler = handlers.Scheduler(schedules)
            scheduler.start()
            self._stops.append(scheduler.stop)
        for schedule in schedules:
            when = f"{schedule.expression} (UTC; or now with agistack run)"
            log.info("schedule %s: %s", schedule.name, when)

    def _start_media_cdn(self) -> str:
        """The media bucket's ``public/`` prefix over HTTP, as CloudFront serves it in production."""
        from devstack.media_cdn import start_media_cdn

        assert self.settings is not None
        cdn = start_media_cdn(self.settings, self.options.host)
        self._stops.append(cdn.stop)
        log.info("media cdn (public/ of %s) on %s", self.settings.aws.media_bucket, cdn.url)
        return cdn.url

    def _start_edge(self, secret: str, media_base_url: str) -> None:
        from devstack.edge_server import local_edge_config, start_local_edge

        assert self.settings is not None
        config = local_edge_config(
            self.env,
            signing_secret=secret,
            origins={product.origin_variable: self._api_url(product) for product in PRODUCTS},
            media_base_url=media_base_url,
            vapid_public_key=self.settings.push.vapid_public_key,
        )
        edge = start_local_edge(self.options.host, self.options.edge_port, self.options.data_dir, config)
        self._stops.append(edge.stop)
        log.info("edge gateway and push router on %s (KV under %s)", edge.url, self.options.data_dir / "kv")

    def stop(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception:
                log.exception("while stopping")


def read_state(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None
