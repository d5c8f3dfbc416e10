"""Helpers shared by the OPC UA tests (client side): namespaces, browse paths, polling."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua

from opcua.config import MACHINE_VISION_NS

APP_NS = "urn:edge-inspect:opcua"
CLIENT_URI = "urn:edge-inspect:test-client"
PASSWORDS = {"mes": "mes-secret-1", "scada": "scada-secret-2"}


# -- client helpers ----------------------------------------------------------------------------------
@dataclass
class Ns:
    mv: int
    app: int


async def namespaces(client: Client) -> Ns:
    return Ns(await client.get_namespace_index(MACHINE_VISION_NS), await client.get_namespace_index(APP_NS))


async def vision_node(client: Client, line: str, *path: str) -> Any:
    """Node at `Objects/<line>/<path...>`; path items are 'mv:Name' or 'app:Name'."""
    ns = await namespaces(client)
    parts = [f"{ns.app}:{line}"]
    for item in path:
        prefix, name = item.split(":", 1)
        parts.append(f"{ns.mv if prefix == 'mv' else ns.app}:{name}")
    return await client.nodes.objects.get_child(parts)


async def wait_value(node: Any, expected: Any, timeout: float = 10.0) -> Any:
    """Poll `node` until it reads `expected` (the server updates tags asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await node.read_value()
        if value == expected:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{node} is {value!r}, expected {expected!r}")
        await asyncio.sleep(0.02)


def empty_args() -> ua.Variant:
    return ua.Variant([], ua.VariantType.Variant)


def job_args(part: str = "", recipe: str = "", meas: str = "") -> tuple:
    """StartSingleJob/StartContinuous input arguments (MeasId, PartId, RecipeId, ProductId, Parameters)."""
    return (
        ua.MeasIdDataType(Id=meas),
        ua.PartIdDataType(Id=part),
        ua.RecipeIdExternalDataType(Id=recipe),
        ua.ProductIdDataType(Id=""),
        empty_args(),
    )
