"""Lambda SnapStart on each product's API function (context ``agistack:snapStart``, default on).

On by default: the API function is the one a person waits for, and its cold start is mostly
imports and init (``python -m benchmarks.cold_start``: the apps' import alone is several times
``import boto3``, about 0.7 s here), which SnapStart replaces with a restore of the initialized memory. What it costs:
a new version published on every deploy that changes the function (the API calls its ``live``
alias), a small cache and restore charge per version, and the rule that nothing opened during init
survives: functions/platform/snapstart.py drops every connection before the snapshot and after each
restore, and the code reads randomness from ``secrets``/``os.urandom`` (not re-seeded copies).
Turn it off with ``-c agistack:snapStart=false`` (e.g. to deploy faster while iterating).

Only the API functions: the queue and schedule handlers are not waited on by anyone, and the backup
functions' 10 GB of ephemeral storage is beyond what SnapStart supports (512 MB).

The SAM function gets ``SnapStart`` and ``AutoPublishAlias``; the REST API's integrations and its
invoke permission then name the alias (SAM names it ``<function>Alias<alias>``) instead of the
unpublished function, or every request would still run the $LATEST, snapshot-less code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aws_cdk as cdk

    from cdk.product import ProductApi

ALIAS = "live"
# Chalice's handler string for the REST API's function ("app.app": the Chalice object itself).
API_HANDLER = "app"


def enable_snap_start(product: ProductApi) -> cdk.CfnResource:
    """SnapStart on the product's API function; the API and its permission invoke the alias."""
    import aws_cdk as cdk

    sam_id = product.sam_ids_by_handler()[API_HANDLER]
    function = product.chalice.get_resource(sam_id)
    function.add_property_override("SnapStart", {"ApplyOn": "PublishedVersions"})
    function.add_property_override("AutoPublishAlias", ALIAS)
    stack = cdk.Stack.of(function)
    function_id = str(stack.resolve(function.logical_id))
    alias_id = f"{function_id}Alias{ALIAS}"
    rest_api = product.chalice.get_resource("RestAPI")
    body = product.sam_resource("RestAPI")["Properties"]["DefinitionBody"]
    rest_api.add_property_override("DefinitionBody", _invoke_alias(body, sam_id, alias_id))
    permission = product.chalice.get_resource(f"{sam_id}InvokePermission")
    permission.add_property_override("FunctionName", {"Ref": alias_id})
    return function


def _invoke_alias(body: Any, sam_function_id: str, alias_id: str) -> Any:
    """The OpenAPI body with each integration URI's function ARN replaced by the alias's ARN."""
    text = json.dumps(body)
    arn = "${" + sam_function_id + ".Arn}"
    if arn not in text:
        raise RuntimeError(f"the REST API's body does not invoke {sam_function_id}: cannot point it at the alias")
    return json.loads(text.replace(arn, "${" + alias_id + "}"))
