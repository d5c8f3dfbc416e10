"""The official OPC 40100-1 (Machine Vision) NodeSet, imported into a server at its official NodeIds.

`opcua/nodesets/Opc.Ua.MachineVision.NodeSet2.xml` is the OPC Foundation's file (model 1.0.0,
2019-07-11, MIT licence in its header), unchanged. Importing it gives every ObjectType, VariableType,
DataType, ReferenceType, "Default Binary" encoding, the binary type dictionary and the
NamespaceMetadata object at the ids a generated client (UA-.NETStandard, node-opcua, open62541)
expects. `MV` names the numeric ids this package uses (from `Opc.Ua.MachineVision.NodeIds.csv`).

One repair after the import: RecipeIdExternalDataType, RecipeIdInternalDataType and
ConfigurationIdDataType are subtypes of BinaryIdBaseDataType with an empty `<Definition>`; asyncua
takes them for aliases and binds them to BinaryIdBaseDataType's class, so their values would go out
with BinaryIdBaseDataType's encoding id. `_repair_empty_subtypes` gives each its own class, registered
with its own official encoding id, and writes the inherited fields into its DataTypeDefinition, so
a client that learns types from the server decodes them as what they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.structures104 import make_structure
from asyncua.common.xmlimporter import XmlImporter

from opcua.config import MACHINE_VISION_NS

logger = logging.getLogger(__name__)

NODESET_PATH = Path(__file__).with_name("nodesets") / "Opc.Ua.MachineVision.NodeSet2.xml"
MODEL_VERSION = "1.0.0"


class MV:
    """Official numeric NodeIds (namespace http://opcfoundation.org/UA/MachineVision) used here."""

    # object, variable and event types
    VisionSystemType = 1003
    VisionStateMachineType = 1017
    VisionAutomaticModeStateMachineType = 1021
    RecipeManagementType = 1004
    ResultManagementType = 1007
    ConfigurationManagementType = 1006
    ConfigurationFolderType = 1011
    ResultFolderType = 1016
    ResultType = 2002
    ResultReadyEventType = 1024
    ReadyEventType = 1023
    JobStartedEventType = 1013
    AcquisitionDoneEventType = 1025
    ErrorEventType = 1019
    ErrorResolvedEventType = 1020
    StateChangedEventType = 1018
    RecipePreparedEventType = 1022
    # data types
    RecipeIdExternalDataType = 3002
    ProductIdDataType = 3003
    PartIdDataType = 3004
    ProcessingTimesDataType = 3005
    ResultDataType = 3006
    ConfigurationDataType = 3007
    ConfigurationIdDataType = 3008
    ResultStateDataType = 3009
    RecipeIdInternalDataType = 3013
    TriStateBooleanDataType = 3014
    MeasIdDataType = 3015
    JobIdDataType = 3016
    TrimmedString = 3017
    Handle = 3018
    BinaryIdBaseDataType = 3019
    ResultIdDataType = 3021
    SystemStateDataType = 3023
    SystemStateDescriptionDataType = 3024
    # "Default Binary" encodings of the three subtypes the import gets wrong
    RecipeIdExternalDataType_Encoding_DefaultBinary = 5002
    ConfigurationIdDataType_Encoding_DefaultBinary = 5090
    RecipeIdInternalDataType_Encoding_DefaultBinary = 5268
    # the NamespaceMetadata object under Server/Namespaces
    NamespaceMetadata = 5009


_EMPTY_SUBTYPES = {
    "RecipeIdExternalDataType": (
        MV.RecipeIdExternalDataType,
        MV.RecipeIdExternalDataType_Encoding_DefaultBinary,
    ),
    "RecipeIdInternalDataType": (
        MV.RecipeIdInternalDataType,
        MV.RecipeIdInternalDataType_Encoding_DefaultBinary,
    ),
    "ConfigurationIdDataType": (
        MV.ConfigurationIdDataType,
        MV.ConfigurationIdDataType_Encoding_DefaultBinary,
    ),
}


class _ServerXmlImporter(XmlImporter):
    """asyncua's importer, reading references straight from the server's address space.

    `_add_missing_reverse_references` browses every new node (half of the import's ~1.5 s, most of it
    in reference-type subtype checks); reading `NodeData.references` gives the same list (all
    references, both directions) without the browse. The algorithm is otherwise asyncua's.
    """

    async def _add_missing_reverse_references(self, new_nodes: list[Any]) -> set[Any]:
        aspace = self.session.iserver.aspace
        one_way = {
            ua.ObjectIds.GuardVariableType,
            ua.ObjectIds.HasGuard,
            ua.ObjectIds.TransitionVariableType,
            ua.ObjectIds.StateMachineType,
            ua.ObjectIds.StateVariableType,
            ua.ObjectIds.TwoStateVariableType,
            ua.ObjectIds.StateType,
            ua.ObjectIds.TransitionType,
            ua.ObjectIds.FiniteTransitionVariableType,
            ua.ObjectIds.HasInterface,
        }
        dangling = set(new_nodes)
        refs: dict[tuple[ua.NodeId, ua.NodeId, ua.NodeId], ua.ReferenceDescription] = {}
        for node_id in new_nodes:
            for ref in list(aspace[node_id].references):
                dangling.discard(node_id)
                dangling.discard(ref.NodeId)
                rtype = ref.ReferenceTypeId
                if rtype.NamespaceIndex != 0 or rtype.Identifier not in one_way:
                    refs[(node_id, ref.NodeId, rtype)] = ref
        for node_id in dangling:
            logger.warning("opcua: NodeSet node %s has no references", node_id)
        fixes = [
            ua.AddReferencesItem(
                SourceNodeId=target, TargetNodeId=source, ReferenceTypeId=rtype, IsForward=not ref.IsForward
            )
            for (source, target, rtype), ref in refs.items()
            if (target, source, rtype) not in refs
        ]
        await self._add_references(fixes)
        return dangling


async def import_machine_vision(server: Server) -> int:
    """Import the official NodeSet into `server`; return the Machine Vision namespace index."""
    await _ServerXmlImporter(server, True, True).import_xml(str(NODESET_PATH))
    mv = await server.get_namespace_index(MACHINE_VISION_NS)
    await _repair_empty_subtypes(server, mv)
    return mv


async def _repair_empty_subtypes(server: Server, mv: int) -> None:
    base = await server.get_node(ua.NodeId(MV.BinaryIdBaseDataType, mv)).read_data_type_definition()
    for name, (type_id, encoding_id) in _EMPTY_SUBTYPES.items():
        data_type = ua.NodeId(type_id, mv)
        encoding = ua.NodeId(encoding_id, mv)
        sdef = ua.StructureDefinition(
            DefaultEncodingId=encoding,
            BaseDataType=ua.NodeId(MV.BinaryIdBaseDataType, mv),
            StructureType=base.StructureType,
            Fields=list(base.Fields),
        )
        existing = getattr(ua, name, None)
        if not (existing is not None and getattr(existing, "data_type", None) == data_type):
            # asyncua registered the name as an alias of BinaryIdBaseDataType: give it its own class
            ua.uatypes.basetype_by_datatype.pop(data_type, None)
            for cls_, alias_id in list(ua.uatypes.basetype_datatypes.items()):
                if alias_id == data_type:
                    del ua.uatypes.basetype_datatypes[cls_]
            if existing is not None:
                delattr(ua, name)  # else register_extension_object keeps the alias bound to the name
            cls = make_structure(data_type, name, sdef)[name]
            ua.register_extension_object(name, encoding, cls, data_type)
        await server.get_node(data_type).write_data_type_definition(sdef)


def mv_class(name: str) -> Any:
    """The Python class of an official structure (after `import_machine_vision`)."""
    return getattr(ua, name)
