"""The official OPC 40100 NodeSet as a client generated from it knows it, read from ../shared/opcua.

Independent of asyncua's importer and of the server: plain ElementTree over the OPC Foundation's
file, and a small OPC UA Binary decoder/encoder driven only by the NodeSet's DataType definitions
(the way a ModelCompiler-generated client finds a structure by its "Default Binary" encoding id).
"""

from __future__ import annotations

import csv
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "opcua"
NODESET = SHARED / "Opc.Ua.MachineVision.NodeSet2.xml"
NODE_IDS = SHARED / "Opc.Ua.MachineVision.NodeIds.csv"
SKIP_REASON = f"the official NodeSet is not at {SHARED} (the shared reference data is absent)"

_NS = {"u": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}
_TYPES = "{http://opcfoundation.org/UA/2008/02/Types.xsd}"
_CLASSES = {
    "UAObject": "Object",
    "UAVariable": "Variable",
    "UAMethod": "Method",
    "UAObjectType": "ObjectType",
    "UAVariableType": "VariableType",
    "UADataType": "DataType",
    "UAReferenceType": "ReferenceType",
}
_MANDATORY = "i=78"


@dataclass
class Ref:
    type: str  # NodeId text after alias resolution, e.g. "i=47" or "ns=1;i=4002"
    target: str
    forward: bool


@dataclass
class Field:
    name: str
    data_type: str
    optional: bool
    array: bool


@dataclass
class OfficialNode:
    nodeid: str  # as in the file: "ns=1;i=1003"
    browse_name: str  # "1:VisionSystemType" or "InputArguments"
    node_class: str
    refs: list[Ref]
    parent: str | None
    data_type: str | None = None
    abstract: bool = False
    fields: list[Field] | None = None  # DataTypes with a <Definition>
    arguments: list[tuple[str, str, int]] = field(default_factory=list)  # (Name, DataType, ValueRank)
    value_rank: int | None = None  # Variables and VariableTypes: the ValueRank attribute (default -1)
    array_dimensions: list[int] | None = None

    @property
    def number(self) -> int:
        return int(self.nodeid.split("i=")[1])

    @property
    def name(self) -> str:
        return self.browse_name.split(":", 1)[-1]

    def targets(self, ref_type: str, forward: bool = True) -> list[str]:
        return [r.target for r in self.refs if r.type == ref_type and r.forward == forward]


@dataclass
class OfficialModel:
    uri: str
    version: str
    publication_date: datetime
    nodes: dict[str, OfficialNode]
    csv_rows: list[tuple[str, int, str]]

    def by_name(self, name: str, node_class: str) -> OfficialNode:
        return next(n for n in self.nodes.values() if n.name == name and n.node_class == node_class)

    def children(self, node: OfficialNode) -> list[OfficialNode]:
        return [self.nodes[t] for t in node.targets("i=47") + node.targets("i=46") if t in self.nodes]

    def modelling_rule(self, node: OfficialNode) -> str | None:
        rules = node.targets("i=37")
        return rules[0] if rules else None

    def mandatory_methods(self, type_name: str) -> dict[str, OfficialNode]:
        owner = self.by_name(type_name, "ObjectType")
        return {
            c.name: c
            for c in self.children(owner)
            if c.node_class == "Method" and self.modelling_rule(c) == _MANDATORY
        }

    def method_arguments(self, method: OfficialNode) -> dict[str, list[tuple[str, str, int]]]:
        return {c.name: c.arguments for c in self.children(method) if c.node_class == "Variable"}

    def default_binary(self, data_type: OfficialNode) -> OfficialNode | None:
        for target in data_type.targets("i=38"):
            node = self.nodes.get(target)
            if node is not None and node.name == "Default Binary":
                return node
        return None


def load() -> OfficialModel:
    root = ET.parse(NODESET).getroot()
    aliases = {a.get("Alias"): a.text for a in root.find("u:Aliases", _NS)}
    model_el = root.find("u:Models/u:Model", _NS)
    nodes: dict[str, OfficialNode] = {}

    def resolve(text: str | None) -> str | None:
        return aliases.get(text, text) if text is not None else None

    for el in root:
        tag = el.tag.split("}")[1]
        if tag not in _CLASSES:
            continue
        refs = [
            Ref(resolve(r.get("ReferenceType")), r.text.strip(), r.get("IsForward", "true") != "false")
            for r in el.find("u:References", _NS)
        ]
        node = OfficialNode(
            nodeid=el.get("NodeId"),
            browse_name=el.get("BrowseName"),
            node_class=_CLASSES[tag],
            refs=refs,
            parent=el.get("ParentNodeId"),
            data_type=resolve(el.get("DataType")),
            abstract=el.get("IsAbstract") == "true",
        )
        if node.node_class in ("Variable", "VariableType"):
            node.value_rank = int(el.get("ValueRank", "-1"))
            dims = el.get("ArrayDimensions")
            node.array_dimensions = [int(d) for d in dims.split(",")] if dims else None
        definition = el.find("u:Definition", _NS)
        if definition is not None:
            node.fields = [
                Field(
                    f.get("Name"),
                    resolve(f.get("DataType")) or "i=24",
                    f.get("IsOptional") == "true",
                    f.get("ValueRank") == "1",
                )
                for f in definition.findall("u:Field", _NS)
            ]
        for arg in el.iter(f"{_TYPES}Argument"):
            name = arg.find(f"{_TYPES}Name").text
            dtype = arg.find(f"{_TYPES}DataType/{_TYPES}Identifier").text
            rank = arg.find(f"{_TYPES}ValueRank")
            node.arguments.append((name, dtype, int(rank.text) if rank is not None else -1))
        nodes[node.nodeid] = node
    with NODE_IDS.open() as f:
        rows = [(r[0], int(r[1]), r[2]) for r in csv.reader(f) if len(r) == 3]
    published = datetime.fromisoformat(model_el.get("PublicationDate").replace("Z", "+00:00"))
    return OfficialModel(model_el.get("ModelUri"), model_el.get("Version"), published, nodes, rows)


# -- OPC UA Binary, driven by the official definitions ------------------------------------------------
_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)
# builtin (and 1.04 simple subtypes) -> struct format or decoder name
_SCALARS = {
    "i=1": "<?",
    "i=4": "<h",
    "i=5": "<H",
    "i=6": "<i",
    "i=7": "<I",
    "i=9": "<Q",
    "i=11": "<d",
    "i=290": "<d",  # Duration
}


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise ValueError("truncated body")
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str | None:
        n = self.unpack("<i")
        return None if n < 0 else self.take(n).decode()

    def bytestring(self) -> bytes | None:
        n = self.unpack("<i")
        return None if n < 0 else self.take(n)

    def datetime(self) -> datetime:
        ticks = self.unpack("<q")
        return _EPOCH + timedelta(microseconds=ticks // 10)

    def localized_text(self) -> tuple[str | None, str | None]:
        mask = self.unpack("<B")
        locale = self.string() if mask & 1 else None
        text = self.string() if mask & 2 else None
        return locale, text

    def nodeid(self) -> tuple[int, int | str]:
        kind = self.unpack("<B") & 0x3F
        if kind == 0:
            return 0, self.unpack("<B")
        if kind == 1:
            return self.unpack("<B"), self.unpack("<H")
        if kind == 2:
            return self.unpack("<H"), self.unpack("<I")
        if kind == 3:
            return self.unpack("<H"), self.string() or ""
        raise ValueError(f"NodeId encoding {kind} not needed here")


class OfficialCodec:
    """Decodes/encodes Machine Vision structures the way a client generated from the NodeSet does."""

    def __init__(self, official: OfficialModel, mv_index: int) -> None:
        self.official = official
        self.mv = mv_index
        # "Default Binary" encoding id (number in the MV namespace) -> DataType node
        self.by_encoding: dict[int, OfficialNode] = {}
        for node in official.nodes.values():
            if node.node_class == "DataType":
                enc = official.default_binary(node)
                if enc is not None:
                    self.by_encoding[enc.number] = node

    def _supertype(self, node: OfficialNode) -> str | None:
        parents = node.targets("i=45", forward=False)
        return parents[0] if parents else None

    def fields_of(self, node: OfficialNode) -> list[Field]:
        """The fields: a subtype with an empty definition has its supertype's (OPC 10000-3 §8.49)."""
        current: OfficialNode | None = node
        while current is not None:
            if current.fields:
                return current.fields
            parent = self._supertype(current)
            current = self.official.nodes.get(parent) if parent else None
        return []

    def _base(self, dtype: str) -> str:
        """Resolve Machine Vision simple types (TrimmedString, Handle, ResultStateDataType, the enums)."""
        node = self.official.nodes.get(dtype)
        while node is not None and node.fields is None:
            parent = self._supertype(node)
            if parent is None:
                break
            if parent == "i=29":  # Enumeration
                return "i=6"
            dtype = parent
            node = self.official.nodes.get(parent)
        return dtype

    def decode_extension_object(self, type_number: int, body: bytes) -> dict[str, Any]:
        node = self.by_encoding[type_number]
        reader = Reader(body)
        value = self._struct(node, reader)
        if reader.pos != len(body):
            raise ValueError(f"{node.name}: {len(body) - reader.pos} bytes left over")
        value["__type__"] = node.name
        return value

    def _struct(self, node: OfficialNode, reader: Reader) -> dict[str, Any]:
        fields = self.fields_of(node)
        mask = reader.unpack("<I") if any(f.optional for f in fields) else None
        out: dict[str, Any] = {}
        bit = 0
        for f in fields:
            if f.optional:
                present = bool(mask & (1 << bit))  # type: ignore[operator]
                bit += 1
                if not present:
                    out[f.name] = None
                    continue
            if f.array:
                n = reader.unpack("<i")
                out[f.name] = [self._value(f.data_type, reader) for _ in range(max(n, 0))]
            else:
                out[f.name] = self._value(f.data_type, reader)
        return out

    def _value(self, dtype: str, reader: Reader) -> Any:
        base = self._base(dtype)
        if base in _SCALARS:
            return reader.unpack(_SCALARS[base])
        if base in ("i=12", f"ns=1;i={3017}", "i=31918"):
            return reader.string()
        if base == "i=15":
            return reader.bytestring()
        if base in ("i=13", "i=294"):
            return reader.datetime()
        if base == "i=21":
            return reader.localized_text()
        if base == "i=24":  # BaseDataType: a Variant
            return self._variant(reader)
        node = self.official.nodes.get(base)
        if node is not None and node.node_class == "DataType":
            return self._struct(node, reader)
        raise ValueError(f"type {dtype} not in the official model")

    def _variant(self, reader: Reader) -> Any:
        mask = reader.unpack("<B")
        kind = mask & 0x3F
        if mask & 0x80:
            raise ValueError("nested Variant arrays are not needed here")
        if kind == 22:  # ExtensionObject: TypeId, encoding byte, body
            ns, ident = reader.nodeid()
            encoding = reader.unpack("<B")
            body = reader.bytestring() if encoding == 1 else b""
            return {"__typeid__": (ns, ident), "__body__": body}
        raise ValueError(f"Variant of builtin type {kind} not needed here")

    # -- encoding, for method arguments -------------------------------------------------------------
    def encode_id(self, type_name: str, value: str) -> tuple[int, bytes]:
        """(Default Binary encoding number, body) of an id structure with only its Id field set."""
        node = self.official.by_name(type_name, "DataType")
        enc = self.official.default_binary(node)
        assert enc is not None
        fields = self.fields_of(node)
        raw = value.encode()
        body = struct.pack("<i", len(raw)) + raw
        if any(f.optional for f in fields):
            body = struct.pack("<I", 0) + body
        return enc.number, body
