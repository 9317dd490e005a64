"""SteppersLife's composition root: configuration in, concrete adapters and services out.

Nothing below this module reads the environment or constructs a client. Heavy clients (boto3) are
built on first use so that a handler that does not need them does not pay for them at cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from functions.platform import topology
from functions.platform.adapters.cloudflare_kv import (
    CloudflareEdgeCache,
    CloudflareKvNamespace,
    CloudflareKvPruner,
    LoggingEdgeCache,
    LoggingKvPruner,
)
from functions.platform.adapters.messaging import EventBridgePublisher, SqsPublisher
from functions.platform.adapters.object_store import S3ObjectStore
from functions.platform.composition import Installed, ProductContainer, aws_client
from functions.platform.config import ConfigurationError
from functions.platform.login_throttle import LoginThrottle
from functions.platform.outbound import GuardedHttpClient
from functions.platform.outbox_relay import MessagePublisher, OutboxRelay
from functions.platform.ports import EdgeCache
from functions.platform.processing import StepEngine
from functions.platform.push import KvPruner, PushDelivery, PushSender
from functions.stepperslife.adapters.flowise import FlowiseEnhancer
from functions.stepperslife.services.engagement import EngagementService
from functions.stepperslife.services.enhancement import ContentEnhancementService, ContentEnhancer, OfflineEnhancer
from functions.stepperslife.services.events import EventService
from functions.stepperslife.services.invalidation import EventInvalidation
from functions.stepperslife.services.processing import event_processor
from functions.stepperslife.services.push import PushService
from functions.stepperslife.services.recommendations import RecommendationService
from functions.stepperslife.services.registrations import RegistrationService
from functions.stepperslife.services.uploads import UploadService
from functions.stepperslife.services.users import UserService
from shared.envelope import STEPPERSLIFE, Identity


@dataclass
class Container(ProductContainer):
    database_name = "stepperslife"

    @cached_property
    def recommendations(self) -> RecommendationService:
        return RecommendationService(self.db, self.cache)

    @cached_property
    def users(self) -> UserService:
        return UserService(
            self.db, recommendations=self.recommendations, throttle=LoginThrottle(self.redis, STEPPERSLIFE)
        )

    def current_identity(self, identity: Identity) -> Identity:
        return self.users.current_identity(identity)

    @cached_property
    def event_invalidation(self) -> EventInvalidation:
        return EventInvalidation(self.cache, self.edge_cache)

    @cached_property
    def events(self) -> EventService:
        return EventService(self.db, self.cache, invalidation=self.event_invalidation, outbox=self.outbox_relay)

    @cached_property
    def registrations(self) -> RegistrationService:
        return RegistrationService(self.db, recommendations=self.recommendations, outbox=self.outbox_relay)

    @cached_property
    def media_store(self) -> S3ObjectStore:
        aws = self.settings.aws
        return S3ObjectStore(aws.media_bucket, region=aws.region, endpoint_url=aws.endpoint_url)

    @cached_property
    def uploads(self) -> UploadService:
        return UploadService(self.db, self.media_store, self.event_invalidation)

    @cached_property
    def message_publisher(self) -> MessagePublisher:
        if self.settings.aws.domain_events_via == "eventbridge":
            return EventBridgePublisher(lambda: aws_client(self.settings, "events"), self.settings.aws.event_bus_name)
        return SqsPublisher(lambda: aws_client(self.settings, "sqs"), topology.DOMAIN_EVENTS.name)

    @cached_property
    def outbox_relay(self) -> OutboxRelay:
        return OutboxRelay(self.db, self.message_publisher)

    @cached_property
    def content_enhancer(self) -> ContentEnhancer:
        offline = OfflineEnhancer()
        flowise = self.settings.flowise
        if not (flowise.url and flowise.chatflow_id):
            return offline
        return FlowiseEnhancer(
            base_url=flowise.url,
            chatflow_id=flowise.chatflow_id,
            api_key=flowise.api_key,
            timeout_seconds=flowise.timeout_seconds,
            fallback=offline,
        )

    @cached_property
    def enhancement(self) -> ContentEnhancementService:
        return ContentEnhancementService(self.db, self.content_enhancer, self.redis, self.settings.site.url)

    @cached_property
    def push_sender(self) -> PushSender | None:
        push = self.settings.push
        if not (push.vapid_private_key and push.vapid_subject):
            return None
        from functions.platform.adapters.webpush import WebPushSender  # cryptography: only where push is configured

        sender = WebPushSender(private_key=push.vapid_private_key, subject=push.vapid_subject, client=self.outbound)
        if push.vapid_public_key and push.vapid_public_key.rstrip("=") != sender.public_key:
            raise ConfigurationError("VAPID_PUBLIC_KEY is not the public half of VAPID_PRIVATE_KEY")
        return sender

    @cached_property
    def kv_pruner(self) -> KvPruner:
        namespace = self._cloudflare_kv(self.settings.cloudflare.push_subs_kv_id)
        return CloudflareKvPruner(namespace) if namespace else LoggingKvPruner()

    @cached_property
    def edge_cache(self) -> EdgeCache:
        namespace = self._cloudflare_kv(self.settings.cloudflare.api_cache_kv_id)
        return CloudflareEdgeCache(namespace) if namespace else LoggingEdgeCache()

    def _cloudflare_kv(self, namespace_id: str | None) -> CloudflareKvNamespace | None:
        cloudflare = self.settings.cloudflare
        if not (cloudflare.account_id and cloudflare.api_token and namespace_id):
            return None
        return CloudflareKvNamespace(
            api_base=cloudflare.api_base,
            account_id=cloudflare.account_id,
            namespace_id=namespace_id,
            api_token=cloudflare.api_token,
        )

    @cached_property
    def outbound(self) -> GuardedHttpClient:
        """Requests on someone's behalf (push endpoints): https on 443 to public addresses only."""
        return GuardedHttpClient(allow_hosts=self.settings.push.allow_hosts)

    @cached_property
    def push(self) -> PushService:
        return PushService(
            self.db,
            delivery=PushDelivery(
                self.push_sender, check_endpoint=self.outbound.check, concurrency=self.settings.push.concurrency
            ),
            pruner=self.kv_pruner,
            check_endpoint=self.outbound.check,
            site_url=self.settings.site.url,
        )

    @cached_property
    def engagement(self) -> EngagementService:
        return EngagementService(self.db, self.claims, self.recommendations, self.push, self.settings.site.url)

    @cached_property
    def event_processor(self) -> StepEngine:
        return event_processor(
            self.claims, enhancer=self.enhancement, invalidation=self.event_invalidation, notifier=self.push
        )


_installed = Installed(Container)
# The dev stack and tests install a container built from their settings; Lambda builds one from the
# environment on first use.
configure = _installed.configure
container = _installed.get
