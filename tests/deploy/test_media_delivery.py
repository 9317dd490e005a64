"""Media delivery: CloudFront with Origin Access Control reads public/ only; the bucket stays private."""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import Synth

pytestmark = pytest.mark.slow


def test_cloudfront_reads_public_variants_through_origin_access_control(synth: Synth) -> None:
    media = synth.stack.media_delivery
    oac_id = synth.logical_id(media.origin_access_control)
    oac = synth.resources[oac_id]["Properties"]["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == (
        "s3",
        "always",
        "sigv4",
    )
    distribution_id = synth.logical_id(media.distribution)
    config = synth.resources[distribution_id]["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": [oac_id, "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}, "an OAI beside the OAC"
    bucket_id = synth.logical_id(synth.stack.media_bucket)
    assert origin["DomainName"] == {"Fn::GetAtt": [bucket_id, "RegionalDomainName"]}
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "https-only"
    assert config["DefaultCacheBehavior"]["AllowedMethods"] == ["GET", "HEAD"]


def test_the_bucket_lets_only_that_distribution_read_only_public_keys(synth: Synth) -> None:
    bucket_id = synth.logical_id(synth.stack.media_bucket)
    bucket = synth.resources[bucket_id]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values()), "the media bucket must stay private"
    (policy,) = (
        p for p in synth.of_type("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    cloudfront = [s for s in allows if s["Principal"] == {"Service": "cloudfront.amazonaws.com"}]
    (statement,) = cloudfront
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/public/*"]]}
    source_arn = json.dumps(statement["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert "distribution/" in source_arn
    assert json.dumps({"Ref": synth.logical_id(synth.stack.media_delivery.distribution)}) in source_arn
    assert len(allows) == len(cloudfront), "something else may read the media bucket"


def test_its_domain_is_the_edge_workers_media_base_url(synth: Synth) -> None:
    output = synth.json["Outputs"]["MediaPublicBaseUrl"]["Value"]
    distribution_id = synth.logical_id(synth.stack.media_delivery.distribution)
    assert output == {"Fn::Join": ["", ["https://", {"Fn::GetAtt": [distribution_id, "DomainName"]}]]}
