"""The VPC the functions join when the database or the cache is managed (cdk/data.py).

Two availability zones (RDS and ElastiCache need subnets in two), public subnets for the NAT and
private subnets with egress for the functions, the database, its proxy and the cache. One NAT for
the whole VPC: a NAT gateway (~$32/month + $0.045/GB processed, managed, one AZ) or a t4g.nano NAT
instance (~$3/month + EC2 data transfer, one AZ, no automatic recovery: a stopped instance stops all
outbound HTTP until it is replaced). The functions' outbound HTTP (Cloudflare, Portainer, push
services, flowise) leaves through it. S3 is reached through a gateway endpoint (free); Secrets
Manager, SQS, EventBridge and SES through interface endpoints (~$7.30/month each per AZ, ~$58/month
for the four in two AZs) unless ``agistack:vpcEndpoints`` is ``gateway``, when they too go through
the NAT.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

MAX_AZS = 2
NAT_INSTANCE_TYPE = "t4g.nano"
# The AWS APIs the functions call, besides S3 (functions/platform/composition.py's aws_client users
# and the secret reader): Secrets Manager at start, SQS and EventBridge from the outbox relay, SES v2
# for AGI Staffers' mail.
INTERFACE_ENDPOINTS = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "EventBridge": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "Ses": ec2.InterfaceVpcEndpointAwsService.EMAIL,
}


class Network(Construct):
    """The VPC, its NAT, its endpoints, and the security group the functions run in."""

    def __init__(self, scope: Construct, construct_id: str, *, nat: str, interface_endpoints: bool) -> None:
        super().__init__(scope, construct_id)
        if nat == "instance":
            self.nat_provider: ec2.NatProvider = ec2.NatProvider.instance_v2(
                instance_type=ec2.InstanceType(NAT_INSTANCE_TYPE),
                machine_image=ec2.MachineImage.latest_amazon_linux2023(cpu_type=ec2.AmazonLinuxCpuType.ARM_64),
                default_allowed_traffic=ec2.NatTrafficDirection.OUTBOUND_ONLY,
                associate_public_ip_address=True,
            )
        else:
            self.nat_provider = ec2.NatProvider.gateway()
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=MAX_AZS,
            nat_gateways=1,
            nat_gateway_provider=self.nat_provider,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        if isinstance(self.nat_provider, ec2.NatInstanceProviderV2):
            # The instance forwards what the private subnets send it, and nothing from outside.
            self.nat_provider.security_group.add_ingress_rule(
                ec2.Peer.ipv4(self.vpc.vpc_cidr_block), ec2.Port.all_traffic(), "forward from the VPC"
            )
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.functions_security_group = ec2.SecurityGroup(
            self, "Functions", vpc=self.vpc, description="agistack Lambda functions", allow_all_outbound=True
        )
        if interface_endpoints:
            for name, service in INTERFACE_ENDPOINTS.items():
                self.vpc.add_interface_endpoint(
                    name, service=service, subnets=self.private_subnets, private_dns_enabled=True
                )
