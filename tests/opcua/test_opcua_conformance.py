"""Conformance with the official OPC 40100 NodeSet (../shared/opcua), checked on a running server.

Every node of the NodeSet at its official NodeId with its BrowseName and NodeClass, every "Default
Binary" encoding, the NamespaceMetadata, and the mandatory methods (with their exact arguments) and
members of every VisionSystem the server serves.
"""

from __future__ import annotations

import pytest
from asyncua import Client, ua

from opcua.config import MACHINE_VISION_NS
from tests.opcua import official
from tests.opcua.opcua_helpers import APP_NS

pytestmark = pytest.mark.skipif(not official.NODESET.exists(), reason=official.SKIP_REASON)

_NODE_CLASSES = {c.name: c for c in ua.NodeClass}


@pytest.fixture(scope="module")
def model() -> official.OfficialModel:
    return official.load()


def _server_id(text: str, mv: int) -> ua.NodeId:
    """A NodeId of the file (its namespace 1 is Machine Vision) as the server numbers it."""
    if text.startswith("ns=1;"):
        return ua.NodeId(int(text.split("i=")[1]), mv)
    return ua.NodeId.from_string(text)


async def _read(client: Client, ids: list[ua.NodeId], attr: ua.AttributeIds) -> list[ua.DataValue]:
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=i, AttributeId=attr) for i in ids]
    return await client.uaclient.read(params)


async def test_every_official_node_at_its_nodeid(demo_server, model):
    async with Client(demo_server.url, timeout=30) as client:
        mv = await client.get_namespace_index(MACHINE_VISION_NS)
        nodes = list(model.nodes.values())
        ids = [_server_id(n.nodeid, mv) for n in nodes]
        names = await _read(client, ids, ua.AttributeIds.BrowseName)
        classes = await _read(client, ids, ua.AttributeIds.NodeClass)
    wrong = []
    for node, name, node_class in zip(nodes, names, classes, strict=True):
        expected = ua.QualifiedName(node.name, mv if node.browse_name.startswith("1:") else 0)
        if not name.StatusCode.is_good():
            wrong.append(f"{node.nodeid} {node.browse_name}: missing ({name.StatusCode.name})")
        elif name.Value.Value != expected or node_class.Value.Value != _NODE_CLASSES[node.node_class]:
            wrong.append(f"{node.nodeid}: {name.Value.Value} {node_class.Value.Value}, official {expected}")
    assert len(nodes) == len(model.csv_rows) == 790
    assert wrong == []
    # the CSV names every one of them with its symbolic name; the ids agree
    assert {r[1] for r in model.csv_rows} == {n.number for n in nodes}


async def test_every_type_and_encoding(demo_server, model):
    """Each DataType has its official encodings, and structures name the official Default Binary
    encoding in their DataTypeDefinition (what a client that learns from the server uses)."""
    async with Client(demo_server.url, timeout=30) as client:
        mv = await client.get_namespace_index(MACHINE_VISION_NS)
        types = [n for n in model.nodes.values() if n.node_class.endswith("Type")]
        assert {t.node_class for t in types} == {"ObjectType", "VariableType", "DataType", "ReferenceType"}
        assert len(types) == 60
        problems = []
        for dtype in (t for t in types if t.node_class == "DataType"):
            node = client.get_node(_server_id(dtype.nodeid, mv))
            served = {r.NodeId for r in await node.get_references(refs=ua.ObjectIds.HasEncoding)}
            expected = {_server_id(t, mv) for t in dtype.targets("i=38")}
            if served != expected:
                problems.append(f"{dtype.name}: encodings {served} != {expected}")
            binary = model.default_binary(dtype)
            if binary is None or dtype.abstract:
                continue
            definition = await node.read_data_type_definition()
            if definition.DefaultEncodingId != _server_id(binary.nodeid, mv):
                problems.append(f"{dtype.name}: DefaultEncodingId {definition.DefaultEncodingId}")
            supers = await node.get_referenced_nodes(ua.ObjectIds.HasSubtype, ua.BrowseDirection.Inverse)
            official_super = dtype.targets("i=45", forward=False)
            if [s.nodeid for s in supers] != [_server_id(official_super[0], mv)]:
                problems.append(f"{dtype.name}: supertype {supers}")
        assert problems == []
        encodings = [n for n in model.nodes.values() if n.name == "Default Binary"]
        assert len(encodings) == 17
        # the binary type dictionary (OPC UA 1.04 clients read it) is served too
        dictionary = client.get_node(_server_id(model.by_name("TypeDictionary", "Variable").nodeid, mv))
        assert b"ResultDataType" in await dictionary.read_value()


async def test_namespace_metadata(demo_server, model):
    async with Client(demo_server.url, timeout=30) as client:
        mv = await client.get_namespace_index(MACHINE_VISION_NS)
        meta = await client.nodes.namespaces.get_child(ua.QualifiedName(model.uri, mv))
        values = {
            name: await (await meta.get_child(f"0:{name}")).read_value()
            for name in ("NamespaceUri", "NamespaceVersion", "NamespacePublicationDate")
        }
        type_def = await meta.read_type_definition()
    assert values == {
        "NamespaceUri": "http://opcfoundation.org/UA/MachineVision",
        "NamespaceVersion": "1.0.0",
        "NamespacePublicationDate": model.publication_date,
    }
    assert type_def == ua.NodeId(ua.ObjectIds.NamespaceMetadataType)


# member path below the VisionSystem -> official type whose mandatory methods it must have
_METHOD_OWNERS = {
    "VisionStateMachine": "VisionStateMachineType",
    "VisionStateMachine/AutomaticModeStateMachine": "VisionAutomaticModeStateMachineType",
    "RecipeManagement": "RecipeManagementType",
    "ResultManagement": "ResultManagementType",
    "ConfigurationManagement": "ConfigurationManagementType",
}


async def _arguments(method) -> dict[str, list[tuple[str, str, int]]]:
    out = {}
    for prop in await method.get_properties():
        name = (await prop.read_browse_name()).Name
        args = await prop.read_value()
        out[name] = [(a.Name, a.DataType.to_string(), a.ValueRank) for a in args]
    return out


def _official_args(model: official.OfficialModel, method: official.OfficialNode, mv: int) -> dict:
    return {
        kind: [(name, _server_id(dtype, mv).to_string(), rank) for name, dtype, rank in args]
        for kind, args in model.method_arguments(method).items()
    }


async def test_every_vision_system_has_the_mandatory_members(demo_server, model):
    async with Client(demo_server.url, timeout=30) as client:
        mv = await client.get_namespace_index(MACHINE_VISION_NS)
        app = await client.get_namespace_index(APP_NS)
        vision_type = ua.NodeId(model.by_name("VisionSystemType", "ObjectType").number, mv)
        systems = [
            n
            for n in await client.nodes.objects.get_children()
            if await n.read_type_definition() == vision_type
        ]
        assert {(await s.read_browse_name()).Name for s in systems} == set(demo_server.lines)
        for system in systems:
            for path, type_name in _METHOD_OWNERS.items():
                owner = await system.get_child([f"{mv}:{p}" for p in path.split("/")])
                official_type = model.by_name(type_name, "ObjectType")
                assert await owner.read_type_definition() == ua.NodeId(official_type.number, mv)
                for name, method in model.mandatory_methods(type_name).items():
                    served = await owner.get_child(f"{mv}:{name}")
                    assert await served.read_node_class() == ua.NodeClass.Method
                    assert await _arguments(served) == _official_args(model, method, mv), (path, name)
            sm = await system.get_child(f"{mv}:VisionStateMachine")
            for member in ("0:CurrentState", "0:LastTransition"):
                await sm.get_child(member)
            for member in ("SystemState", "DiagnosticLevel"):
                await system.get_child(f"{mv}:{member}")
            results = await system.get_child([f"{mv}:ResultManagement", f"{mv}:Results"])
            latest = await results.get_child(f"{app}:LatestResult")
            result_type = model.by_name("ResultType", "VariableType")
            assert await latest.read_type_definition() == ua.NodeId(result_type.number, mv)
            children = {(await c.read_browse_name()).Name for c in await latest.get_children()}
            mandatory = {c.name for c in model.children(result_type) if model.modelling_rule(c) == "i=78"}
            assert mandatory <= children
            assert {c.name for c in model.children(result_type)} == children  # the optional ones too


async def test_official_transitions_match_the_served_table(demo_server, model):
    """The transitions the server reports (opcua.states) are the NodeSet's, by id, name and number."""
    from opcua.states import _TRANSITIONS

    for (before, after), options in _TRANSITIONS.items():
        for _cause, number_id, number, name in options:
            node = model.nodes[f"ns=1;i={number_id}"]
            assert node.name == name
            from_states = [model.nodes[t].name for t in node.targets("i=51")]
            to_states = [model.nodes[t].name for t in node.targets("i=52")]
            assert (from_states, to_states) == ([before], [after]), name
            numbers = [c for c in model.children(node) if c.name == "TransitionNumber"]
            assert numbers and _transition_number(numbers[0]) == number


def _transition_number(node: official.OfficialNode) -> int:
    import xml.etree.ElementTree as ET

    root = ET.parse(official.NODESET).getroot()
    for el in root:
        if el.get("NodeId") == node.nodeid:
            return int(
                "".join(el.find("{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}Value").itertext())
            )
    raise KeyError(node.nodeid)
