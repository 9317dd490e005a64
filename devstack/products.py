"""The products the dev stack serves: each its own Chalice app, composition root and origin.

Named here once so that `agistack dev`, `agistack run` and the operator commands treat every
product alike; the modules are imported on use (each app pulls in its whole product).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from functions.platform.config import Settings


class Product(NamedTuple):
    name: str
    package: str  # functions.<name>: app.py and composition.py inside
    origin_variable: str  # the gateway's setting that points at this product's API

    def app(self) -> Any:
        return importlib.import_module(f"{self.package}.app").app

    def configure(self, settings: Settings) -> Any:
        """Install this product's container for ``settings``; returns it (it has ``close``)."""
        return importlib.import_module(f"{self.package}.composition").configure(settings)

    def container(self) -> Any:
        return importlib.import_module(f"{self.package}.composition").container()


STEPPERSLIFE = Product("stepperslife", "functions.stepperslife", "STEPPERSLIFE_ORIGIN")
AGISTAFFERS = Product("agistaffers", "functions.agistaffers", "AGISTAFFERS_ORIGIN")
PRODUCTS = (STEPPERSLIFE, AGISTAFFERS)
