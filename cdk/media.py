"""Media delivery: CloudFront in front of the media bucket's ``public/`` prefix, the bucket private.

The gateway worker reads image variants at ``MEDIA_PUBLIC_BASE_URL`` + their key (``public/...``,
shared/media.py); the stack output ``MediaPublicBaseUrl`` is that value. CloudFront signs its
requests to S3 with Origin Access Control (SigV4); the bucket keeps blocking all public access, and
its policy lets exactly this distribution read ``public/*`` and nothing else: uploads and originals
stay unreachable even through CloudFront (S3 answers 403). The origin is declared without CDK's
automatic OAC grant because that grant covers every key of the bucket.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from shared.media import PUBLIC_PREFIX


class MediaDelivery(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, bucket: s3.Bucket) -> None:
        super().__init__(scope, construct_id)
        self.origin_access_control = cloudfront.S3OriginAccessControl(
            self, "OriginAccessControl", description="agistack media: CloudFront signs its reads of public/"
        )
        origin = origins.S3BucketOrigin.with_bucket_defaults(
            bucket, origin_access_control_id=self.origin_access_control.origin_access_control_id
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="agistack media: image variants under public/",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origin,
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                # Variants never change once written (immutable, a year): cache by path only.
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
            ),
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
        )
        self.distribution_arn = cdk.Stack.of(self).format_arn(
            service="cloudfront",
            region="",
            resource="distribution",
            resource_name=self.distribution.distribution_id,
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudFrontReadsPublicVariants",
                effect=iam.Effect.ALLOW,
                principals=[iam.ServicePrincipal("cloudfront.amazonaws.com")],
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{PUBLIC_PREFIX}*")],
                conditions={"StringEquals": {"AWS:SourceArn": self.distribution_arn}},
            )
        )
