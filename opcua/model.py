"""The OPC 40100-1 (Machine Vision) information model, built in code.

Two parts, as in the asyncua examples: `build_types()` creates the Machine Vision data types, the
ResultReadyEventType and the object types once per server; `build_vision_system()` creates one
`VisionSystem` object per line and returns the nodes the server later writes values into.
`result_to_ua()` turns a result body (dict shaped like schemas/result.schema.json) into a
`ResultDataType` value. No values change here except initial ones.

Namespaces: the Machine Vision URI `http://opcfoundation.org/UA/MachineVision` holds the companion
spec's types and standard browse names; the application namespace holds each line's instance and
our vendor extensions (the PLC folder, `InspectionContentDataType` inside ResultContent).
NodeIds of the types are our own (the OPC Foundation NodeSet is not copied): clients find nodes by
browse path, e.g. `0:Objects/3:line1/2:ResultManagement/2:Results/3:LatestResult`.
`TrimmedString` and `Handle` are the namespace-0 types that OPC UA 1.05 took over from the spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from asyncua import Server, ua
from asyncua.common.manage_nodes import create_encoding
from asyncua.common.node import Node
from asyncua.common.structures104 import new_struct_field

from opcua.backend import ResultBody

# StateNumber values of OPC 40100-1 tables 82 and 97.
VISION_STATES = {"Preoperational": 1, "Halted": 2, "Error": 3, "Operational": 4}
AUTOMATIC_STATES = {"Initialized": 5, "Ready": 6, "SingleExecution": 7, "ContinuousExecution": 8}
RESULT_STATE_COMPLETED = 1

TRIMMED_STRING = ua.NodeId(ua.ObjectIds.TrimmedString)
HANDLE = ua.NodeId(ua.ObjectIds.Handle)

# Our NodeIds for the Machine Vision types, grouped so automatic ids (which count up from the
# largest numeric id present) never collide with them: everything with a fixed id is created first.
_MV_IDS = {
    "BinaryIdBaseDataType": 3019,
    "RecipeIdExternalDataType": 3020,
    "RecipeIdInternalDataType": 3013,
    "ConfigurationIdDataType": 3014,
    "MeasIdDataType": 3015,
    "JobIdDataType": 3016,
    "PartIdDataType": 3017,
    "ProductIdDataType": 3018,
    "ResultIdDataType": 3021,
    "ProcessingTimesDataType": 3005,
    "ResultDataType": 3006,
    "ResultStateDataType": 3009,
    "TriStateBooleanDataType": 3023,
    "VisionSystemType": 1002,
    "VisionStateMachineType": 1026,
    "VisionAutomaticModeStateMachineType": 1021,
    "RecipeManagementType": 1003,
    "ResultManagementType": 1004,
    "ResultFolderType": 1005,
    "ResultReadyEventType": 1024,
    "ResultType": 2002,
}
_APP_IDS = {"DefectDataType": 3001, "InspectionContentDataType": 3002}
_ENCODING_OFFSET = 2000  # Default Binary encoding of type i=N gets i=N+2000


@dataclass
class MvTypes:
    """NodeIds and generated Python classes of the types, for one server."""

    mv: int  # namespace index of the Machine Vision URI
    app: int  # namespace index of the application URI
    ids: dict[str, ua.NodeId] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)

    def new(self, name: str, **values: Any) -> Any:
        return self.classes[name](**values)


@dataclass
class VisionSystemNodes:
    """The nodes of one line's VisionSystem that the server writes to or links methods on."""

    line: str
    system: Node
    state_machine: Node
    current_state: Node
    current_state_id: Node
    current_state_number: Node
    automatic: Node
    automatic_state: Node
    automatic_state_id: Node
    automatic_state_number: Node
    state_nodes: dict[str, ua.NodeId]
    latest_result: Node
    methods: dict[str, Node]
    plc: dict[str, Node]


def _field(
    name: str, dtype: ua.NodeId | ua.VariantType, *, array: bool = False, optional: bool = False
) -> ua.StructureField:
    return new_struct_field(name, dtype, array=array, optional=optional)


async def _struct(
    server: Server,
    ns: int,
    ids: dict[str, int],
    name: str,
    fields: list[ua.StructureField],
    parent: ua.NodeId | None = None,
    abstract: bool = False,
) -> ua.NodeId:
    """A structure data type with its full definition written out.

    Subtypes repeat their parent's fields: a subtype whose definition is empty breaks clients'
    `load_data_type_definitions()` (it decodes to an empty class).
    """
    base = server.get_node(parent or ua.NodeId(ua.ObjectIds.Structure))
    nodeid = ua.NodeId(ids[name], ns)
    dtype = await base.add_data_type(nodeid, ua.QualifiedName(name, ns))
    if abstract:
        await dtype.write_attribute(
            ua.AttributeIds.IsAbstract, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
        )
    sdef = ua.StructureDefinition()
    sdef.BaseDataType = base.nodeid
    sdef.StructureType = (
        ua.StructureType.StructureWithOptionalFields
        if any(f.IsOptional for f in fields)
        else ua.StructureType.Structure
    )
    sdef.Fields = fields
    if not abstract:
        enc = await create_encoding(
            dtype, ua.NodeId(ids[name] + _ENCODING_OFFSET, ns), ua.QualifiedName("Default Binary", 0)
        )
        sdef.DefaultEncodingId = enc.nodeid
    await dtype.write_data_type_definition(sdef)
    return nodeid


async def build_types(server: Server, mv: int, app: int) -> MvTypes:
    """Create the data types, event type and object types; generate their Python classes."""
    types = MvTypes(mv=mv, app=app)
    ids = types.ids

    def arr(name: str) -> ua.NodeId:
        return ids[name]

    # simple subtypes
    result_state = await server.get_node(ua.NodeId(ua.ObjectIds.Int32)).add_data_type(
        ua.NodeId(_MV_IDS["ResultStateDataType"], mv), ua.QualifiedName("ResultStateDataType", mv)
    )
    ids["ResultStateDataType"] = result_state.nodeid
    tri = await server.get_node(ua.NodeId(ua.ObjectIds.Enumeration)).add_data_type(
        ua.NodeId(_MV_IDS["TriStateBooleanDataType"], mv), ua.QualifiedName("TriStateBooleanDataType", mv)
    )
    edef = ua.EnumDefinition()
    for value, label in enumerate(("FALSE_0", "TRUE_1", "DONTCARE_2")):
        edef.Fields.append(ua.EnumField(Value=value, DisplayName=ua.LocalizedText(label), Name=label))
    await tri.write_data_type_definition(edef)
    ids["TriStateBooleanDataType"] = tri.nodeid

    # identifier structures (OPC 40100-1 §12)
    described = [
        _field("Id", TRIMMED_STRING),
        _field("Description", ua.VariantType.LocalizedText, optional=True),
    ]
    for name in ("MeasIdDataType", "PartIdDataType", "ProductIdDataType"):
        ids[name] = await _struct(server, mv, _MV_IDS, name, described)
    for name in ("JobIdDataType", "ResultIdDataType"):
        ids[name] = await _struct(server, mv, _MV_IDS, name, [_field("Id", TRIMMED_STRING)])
    binary_id = [
        _field("Id", TRIMMED_STRING),
        _field("Version", TRIMMED_STRING, optional=True),
        _field("Hash", ua.VariantType.ByteString, optional=True),
        _field("HashAlgorithm", ua.VariantType.String, optional=True),
        _field("Description", ua.VariantType.LocalizedText, optional=True),
    ]
    ids["BinaryIdBaseDataType"] = await _struct(
        server, mv, _MV_IDS, "BinaryIdBaseDataType", binary_id, abstract=True
    )
    for name in ("RecipeIdExternalDataType", "RecipeIdInternalDataType", "ConfigurationIdDataType"):
        ids[name] = await _struct(server, mv, _MV_IDS, name, binary_id, parent=ids["BinaryIdBaseDataType"])
    ids["ProcessingTimesDataType"] = await _struct(
        server,
        mv,
        _MV_IDS,
        "ProcessingTimesDataType",
        [
            _field("StartTime", ua.NodeId(ua.ObjectIds.UtcTime)),
            _field("EndTime", ua.NodeId(ua.ObjectIds.UtcTime)),
            _field("AcquisitionDuration", ua.NodeId(ua.ObjectIds.Duration), optional=True),
            _field("ProcessingDuration", ua.NodeId(ua.ObjectIds.Duration), optional=True),
        ],
    )
    ids["ResultDataType"] = await _struct(
        server,
        mv,
        _MV_IDS,
        "ResultDataType",
        [
            _field("ResultId", arr("ResultIdDataType")),
            _field("HasTransferableDataOnFile", ua.VariantType.Boolean, optional=True),
            _field("IsPartial", ua.VariantType.Boolean),
            _field("IsSimulated", ua.VariantType.Boolean, optional=True),
            _field("ResultState", arr("ResultStateDataType")),
            _field("MeasId", arr("MeasIdDataType"), optional=True),
            _field("PartId", arr("PartIdDataType"), optional=True),
            _field("ExternalRecipeId", arr("RecipeIdExternalDataType"), optional=True),
            _field("InternalRecipeId", arr("RecipeIdInternalDataType")),
            _field("ProductId", arr("ProductIdDataType"), optional=True),
            _field("ExternalConfigurationId", arr("ConfigurationIdDataType"), optional=True),
            _field("InternalConfigurationId", arr("ConfigurationIdDataType")),
            _field("JobId", arr("JobIdDataType")),
            _field("CreationTime", ua.NodeId(ua.ObjectIds.UtcTime)),
            _field("ProcessingTimes", arr("ProcessingTimesDataType"), optional=True),
            _field("ResultContent", ua.NodeId(ua.ObjectIds.BaseDataType), array=True, optional=True),
        ],
    )

    # vendor structures carried in ResultContent
    ids["DefectDataType"] = await _struct(
        server,
        app,
        _APP_IDS,
        "DefectDataType",
        [
            _field("Camera", ua.VariantType.String),
            _field("ClassName", ua.VariantType.String),
            _field("ClassId", ua.VariantType.Int32),
            _field("Confidence", ua.VariantType.Double),
            _field("Xyxy", ua.VariantType.Double, array=True),
            _field("AreaPx", ua.VariantType.Double),
            _field("AreaMm2", ua.VariantType.Double),  # NaN when the line has no mm calibration
            _field("CountsForVerdict", ua.VariantType.Boolean),
        ],
    )
    ids["InspectionContentDataType"] = await _struct(
        server,
        app,
        _APP_IDS,
        "InspectionContentDataType",
        [
            _field("Verdict", ua.VariantType.String),
            _field("Reasons", ua.VariantType.String, array=True),
            _field("DefectCount", ua.VariantType.UInt32),
            _field("Defects", arr("DefectDataType"), array=True),
            _field("Site", ua.VariantType.String),
            _field("Line", ua.VariantType.String),
            _field("Seq", ua.VariantType.Int64),
            _field("ModelName", ua.VariantType.String),
            _field("ModelVersion", ua.VariantType.String),
            _field("BodyJson", ua.VariantType.String),  # the whole result body, schemas/result.schema.json
        ],
    )

    # object, variable and event types (fixed ids first, children after)
    base_object = server.get_node(ua.NodeId(ua.ObjectIds.BaseObjectType))
    fsm = server.get_node(ua.NodeId(ua.ObjectIds.FiniteStateMachineType))
    folder_type = server.get_node(ua.NodeId(ua.ObjectIds.FolderType))
    for name, parent in (
        ("VisionSystemType", base_object),
        ("VisionStateMachineType", fsm),
        ("VisionAutomaticModeStateMachineType", fsm),
        ("RecipeManagementType", base_object),
        ("ResultManagementType", base_object),
        ("ResultFolderType", folder_type),
    ):
        node = await parent.add_object_type(ua.NodeId(_MV_IDS[name], mv), ua.QualifiedName(name, mv))
        ids[name] = node.nodeid
    result_type = await server.get_node(ua.NodeId(ua.ObjectIds.BaseDataVariableType)).add_variable_type(
        ua.NodeId(_MV_IDS["ResultType"], mv), ua.QualifiedName("ResultType", mv), ids["ResultDataType"]
    )
    ids["ResultType"] = result_type.nodeid
    event_type = await server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType)).add_object_type(
        ua.NodeId(_MV_IDS["ResultReadyEventType"], mv), ua.QualifiedName("ResultReadyEventType", mv)
    )
    ids["ResultReadyEventType"] = event_type.nodeid

    # Python classes for the structures, then the event fields with typed, non-null defaults
    # (an event property whose DataType/default is unset goes out as null in every event).
    generated = await server.load_data_type_definitions()
    for name in [*_MV_IDS, *_APP_IDS]:
        cls = generated.get(name) or getattr(ua, name, None)
        if cls is not None:
            types.classes[name] = cls
    for name, value, vtype, dtype in _event_fields(types, placeholder_result(types)):
        prop = await event_type.add_property(mv, name, value, varianttype=vtype, datatype=dtype)
        await prop.set_modelling_rule(True)
    await _declare_type_members(server, types)
    return types


async def _declare_type_members(server: Server, types: MvTypes) -> None:
    """The InstanceDeclarations of the object types, so type-aware clients see what instances have.

    States are defined once on their state machine type (no modelling rule), as OPC 10000-16 does;
    an instance's `CurrentState/Id` points at them.
    """
    mv, ids = types.mv, types.ids
    node = {
        name: server.get_node(ids[name])
        for name in (
            "VisionSystemType",
            "VisionStateMachineType",
            "VisionAutomaticModeStateMachineType",
            "RecipeManagementType",
            "ResultManagementType",
        )
    }
    for owner, states in (
        ("VisionStateMachineType", VISION_STATES),
        ("VisionAutomaticModeStateMachineType", AUTOMATIC_STATES),
    ):
        for name, number in states.items():
            state = await node[owner].add_object(mv, name, objecttype=ua.NodeId(ua.ObjectIds.StateType))
            await (await state.get_child("0:StateNumber")).write_value(
                ua.Variant(number, ua.VariantType.UInt32)
            )
            ids[f"state:{name}"] = state.nodeid
    owners = {
        "state_machine": "VisionStateMachineType",
        "automatic": "VisionAutomaticModeStateMachineType",
        "recipes": "RecipeManagementType",
        "results": "ResultManagementType",
    }
    for name, (owner, inputs, outputs) in method_signatures(types).items():
        method = await node[owners[owner]].add_method(mv, name, None, inputs, outputs)
        await method.set_modelling_rule(True)
        for prop in await method.get_properties():
            await prop.set_modelling_rule(True)
    for owner, name, type_name, mandatory in (
        ("VisionSystemType", "VisionStateMachine", "VisionStateMachineType", True),
        ("VisionSystemType", "RecipeManagement", "RecipeManagementType", False),
        ("VisionSystemType", "ResultManagement", "ResultManagementType", False),
        ("VisionStateMachineType", "AutomaticModeStateMachine", "VisionAutomaticModeStateMachineType", False),
        ("ResultManagementType", "Results", "ResultFolderType", False),
    ):
        child = await _typed_object(
            node[owner], ua.NodeId(NamespaceIndex=mv), ua.QualifiedName(name, mv), ids[type_name]
        )
        await child.set_modelling_rule(mandatory)


def _event_fields(types: MvTypes, result: Any) -> list[tuple[str, Any, ua.VariantType, ua.NodeId]]:
    """The ResultReadyEventType properties (OPC 40100-1 table 112) with values from `result`."""
    ids, x = types.ids, ua.VariantType.ExtensionObject
    return [
        ("ResultId", result.ResultId, x, ids["ResultIdDataType"]),
        (
            "HasTransferableDataOnFile",
            result.HasTransferableDataOnFile,
            ua.VariantType.Boolean,
            ua.NodeId(ua.ObjectIds.Boolean),
        ),
        ("IsPartial", result.IsPartial, ua.VariantType.Boolean, ua.NodeId(ua.ObjectIds.Boolean)),
        ("IsSimulated", result.IsSimulated, ua.VariantType.Boolean, ua.NodeId(ua.ObjectIds.Boolean)),
        ("ResultState", result.ResultState, ua.VariantType.Int32, ids["ResultStateDataType"]),
        ("MeasId", result.MeasId, x, ids["MeasIdDataType"]),
        ("PartId", result.PartId, x, ids["PartIdDataType"]),
        ("ExternalRecipeId", result.ExternalRecipeId, x, ids["RecipeIdExternalDataType"]),
        ("InternalRecipeId", result.InternalRecipeId, x, ids["RecipeIdInternalDataType"]),
        ("ProductId", result.ProductId, x, ids["ProductIdDataType"]),
        ("ExternalConfigurationId", result.ExternalConfigurationId, x, ids["ConfigurationIdDataType"]),
        ("InternalConfigurationId", result.InternalConfigurationId, x, ids["ConfigurationIdDataType"]),
        ("JobId", result.JobId, x, ids["JobIdDataType"]),
        ("CreationTime", result.CreationTime, ua.VariantType.DateTime, ua.NodeId(ua.ObjectIds.UtcTime)),
        ("ProcessingTimes", result.ProcessingTimes, x, ids["ProcessingTimesDataType"]),
        ("ResultContent", result.ResultContent, ua.VariantType.Variant, ua.NodeId(ua.ObjectIds.BaseDataType)),
    ]


def event_field_values(types: MvTypes, result: Any) -> dict[str, tuple[Any, ua.VariantType]]:
    return {name: (value, vtype) for name, value, vtype, _ in _event_fields(types, result)}


def placeholder_result(types: MvTypes) -> Any:
    """A typed, complete ResultDataType used before the first result (never null fields)."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return result_to_ua(
        types,
        {
            "result_id": "",
            "seq": 0,
            "site": "",
            "line": "",
            "part_id": "",
            "recipe": "",
            "verdict": "",
            "model": {"name": "", "version": ""},
            "timestamp": epoch.isoformat(),
            "timings_ms": {},
        },
    )


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def content_to_ua(types: MvTypes, body: ResultBody) -> Any:
    defects = []
    for d in body.get("defects") or []:
        area_mm2 = d.get("area_mm2")
        defects.append(
            types.new(
                "DefectDataType",
                Camera=str(d.get("camera", "")),
                ClassName=str(d.get("class", d.get("class_name", ""))),
                ClassId=int(d.get("class_id", -1)),
                Confidence=float(d.get("confidence", 0.0)),
                Xyxy=[float(v) for v in d.get("xyxy", [])],
                AreaPx=float(d.get("area_px", 0.0)),
                AreaMm2=float(area_mm2) if area_mm2 is not None else float("nan"),
                CountsForVerdict=bool(d.get("counts_for_verdict", True)),
            )
        )
    model = body.get("model") or {}
    return types.new(
        "InspectionContentDataType",
        Verdict=str(body.get("verdict", "")),
        Reasons=[str(r) for r in body.get("reasons") or []],
        DefectCount=sum(1 for d in body.get("defects") or [] if d.get("counts_for_verdict", True)),
        Defects=defects,
        Site=str(body.get("site", "")),
        Line=str(body.get("line", "")),
        Seq=int(body.get("seq") or 0),
        ModelName=str(model.get("name", "")),
        ModelVersion=str(model.get("version", "")),
        BodyJson=json.dumps(body, default=str),
    )


def result_to_ua(types: MvTypes, body: ResultBody) -> Any:
    """A result body (schemas/result.schema.json shape) as a complete `ResultDataType` value."""
    model = body.get("model") or {}
    timings = body.get("timings_ms") or {}
    end = _parse_time(body["timestamp"])
    total_ms = float(timings.get("total", sum(float(v) for v in timings.values())))
    acquisition_ms = float(timings.get("capture", timings.get("acquire", 0.0)))
    recipe = str(body.get("recipe", ""))
    new = types.new
    return new(
        "ResultDataType",
        ResultId=new("ResultIdDataType", Id=str(body.get("result_id", ""))),
        HasTransferableDataOnFile=False,
        IsPartial=False,
        IsSimulated=False,
        ResultState=RESULT_STATE_COMPLETED,
        MeasId=new("MeasIdDataType", Id=str(body.get("meas_id") or "")),
        PartId=new("PartIdDataType", Id=str(body.get("part_id") or "")),
        ExternalRecipeId=new("RecipeIdExternalDataType", Id=recipe),
        InternalRecipeId=new("RecipeIdInternalDataType", Id=recipe),
        ProductId=new("ProductIdDataType", Id=str(body.get("product_id") or "")),
        ExternalConfigurationId=new(
            "ConfigurationIdDataType", Id=str(model.get("name", "")), Version=str(model.get("version", ""))
        ),
        InternalConfigurationId=new(
            "ConfigurationIdDataType",
            Id=str(model.get("sha256") or model.get("name", "")),
            Version=str(model.get("version", "")),
        ),
        JobId=new("JobIdDataType", Id=str(body.get("job_id") or "")),
        CreationTime=end,
        ProcessingTimes=new(
            "ProcessingTimesDataType",
            StartTime=end - timedelta(milliseconds=total_ms),
            EndTime=end,
            AcquisitionDuration=acquisition_ms,
            ProcessingDuration=total_ms,
        ),
        ResultContent=[ua.Variant(content_to_ua(types, body), ua.VariantType.ExtensionObject)],
    )


def _arg(name: str, dtype: ua.NodeId, *, array: bool = False, description: str = "") -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = dtype
    arg.ValueRank = ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar
    arg.ArrayDimensions = [0] if array else []
    arg.Description = ua.LocalizedText(description or name)
    return arg


def method_signatures(types: MvTypes) -> dict[str, tuple[str, list[ua.Argument], list[ua.Argument]]]:
    """name -> (parent component, input args, output args), after OPC 40100-1 §7 and §8."""
    i = types.ids
    int32, uint32, boolean = (
        ua.NodeId(ua.ObjectIds.Int32),
        ua.NodeId(ua.ObjectIds.UInt32),
        ua.NodeId(ua.ObjectIds.Boolean),
    )
    string = ua.NodeId(ua.ObjectIds.String)
    error = _arg("Error", int32, description="0 OK; < 0 application-specific (see docs/opcua.md)")
    cause = [_arg("Cause", int32), _arg("CauseDescription", string)]
    start = [
        _arg("MeasId", i["MeasIdDataType"]),
        _arg("PartId", i["PartIdDataType"]),
        _arg("RecipeId", i["RecipeIdExternalDataType"]),
        _arg("ProductId", i["ProductIdDataType"]),
        _arg("Parameters", ua.NodeId(ua.ObjectIds.BaseDataType), array=True),
    ]
    return {
        "Halt": ("state_machine", cause, [error]),
        "Reset": ("state_machine", cause, [error]),
        "SelectModeAutomatic": ("state_machine", [], [error]),
        "StartSingleJob": ("automatic", start, [_arg("JobId", i["JobIdDataType"]), error]),
        "StartContinuous": ("automatic", start, [_arg("JobId", i["JobIdDataType"]), error]),
        "Stop": ("automatic", [], [error]),
        "Abort": ("automatic", cause, [error]),
        "PrepareRecipe": (
            "recipes",
            [
                _arg("ExternalId", i["RecipeIdExternalDataType"]),
                _arg("InternalIdIn", i["RecipeIdInternalDataType"]),
            ],
            [_arg("InternalIdOut", i["RecipeIdInternalDataType"]), _arg("IsCompleted", boolean), error],
        ),
        "GetRecipeListFiltered": (
            "recipes",
            [
                _arg("ExternalId", i["RecipeIdExternalDataType"]),
                _arg("ProductId", i["ProductIdDataType"]),
                _arg("IsPrepared", i["TriStateBooleanDataType"]),
                _arg("MaxResults", uint32),
                _arg("StartIndex", uint32),
                _arg("Timeout", int32),
            ],
            [
                _arg("IsComplete", boolean),
                _arg("ResultCount", uint32),
                _arg("RecipeHandle", HANDLE),
                _arg("RecipeList", i["RecipeIdInternalDataType"], array=True),
                error,
            ],
        ),
        "GetResultById": (
            "results",
            [_arg("ResultId", i["ResultIdDataType"]), _arg("Timeout", int32)],
            [_arg("ResultHandle", HANDLE), _arg("Result", i["ResultDataType"]), error],
        ),
        "GetResultListFiltered": (
            "results",
            [
                _arg("ResultState", i["ResultStateDataType"]),
                _arg("MeasId", i["MeasIdDataType"]),
                _arg("PartId", i["PartIdDataType"]),
                _arg("ExternalRecipeId", i["RecipeIdExternalDataType"]),
                _arg("InternalRecipeId", i["RecipeIdInternalDataType"]),
                _arg("ExternalConfigurationId", i["ConfigurationIdDataType"]),
                _arg("InternalConfigurationId", i["ConfigurationIdDataType"]),
                _arg("ProductId", i["ProductIdDataType"]),
                _arg("JobId", i["JobIdDataType"]),
                _arg("MaxResults", uint32),
                _arg("StartIndex", uint32),
                _arg("Timeout", int32),
            ],
            [
                _arg("IsComplete", boolean),
                _arg("ResultCount", uint32),
                _arg("ResultHandle", HANDLE),
                _arg("ResultList", i["ResultDataType"], array=True),
                error,
            ],
        ),
    }


READ_ONLY_METHODS = ("GetRecipeListFiltered", "GetResultById", "GetResultListFiltered")

# PLC tags: name -> (initial value, variant type, writable by the PLC)
PLC_TAGS: dict[str, tuple[Any, ua.VariantType, bool]] = {
    "Ready": (False, ua.VariantType.Boolean, False),
    "Trigger": (False, ua.VariantType.Boolean, True),
    "Busy": (False, ua.VariantType.Boolean, False),
    "ResultReady": (False, ua.VariantType.Boolean, False),
    "ResultAck": (False, ua.VariantType.Boolean, True),
    "Verdict": ("", ua.VariantType.String, False),
    "DefectCount": (0, ua.VariantType.UInt32, False),
    "PartId": ("", ua.VariantType.String, False),
    "ResultSeq": (0, ua.VariantType.Int64, False),
    "ModelVersion": ("", ua.VariantType.String, False),
    "InferenceMs": (0.0, ua.VariantType.Double, False),
    "TriggersRefused": (0, ua.VariantType.UInt32, False),
    "TriggerErrors": (0, ua.VariantType.UInt32, False),
}


async def _retype(node: Node, old: int | ua.NodeId, new: ua.NodeId) -> None:
    old_id = old if isinstance(old, ua.NodeId) else ua.NodeId(old)
    await node.delete_reference(old_id, ua.ObjectIds.HasTypeDefinition, bidirectional=False)
    await node.add_reference(new, ua.ObjectIds.HasTypeDefinition, bidirectional=False)


async def _typed_object(parent: Node, nodeid: ua.NodeId, bname: ua.QualifiedName, type_id: ua.NodeId) -> Node:
    """An object of type `type_id` without instantiating the type's declarations: we build the members."""
    obj = await parent.add_object(nodeid, bname)
    await _retype(obj, ua.ObjectIds.BaseObjectType, type_id)
    return obj


async def _current_state(sm: Node, nodeid: str, app: int) -> tuple[Node, Node, Node]:
    """`CurrentState` (FiniteStateVariableType) with its `Id` and `Number` properties."""
    current = await sm.add_variable(
        ua.NodeId(nodeid, app),
        ua.QualifiedName("CurrentState", 0),
        ua.LocalizedText(""),
        ua.VariantType.LocalizedText,
    )
    await _retype(current, ua.ObjectIds.BaseDataVariableType, ua.NodeId(ua.ObjectIds.FiniteStateVariableType))
    current_id = await current.add_property(
        ua.NodeId(f"{nodeid}.Id", app), ua.QualifiedName("Id", 0), ua.NodeId(), ua.VariantType.NodeId
    )
    number = await current.add_property(
        ua.NodeId(f"{nodeid}.Number", app),
        ua.QualifiedName("Number", 0),
        ua.Variant(0, ua.VariantType.UInt32),
    )
    return current, current_id, number


async def build_vision_system(server: Server, types: MvTypes, line: str) -> VisionSystemNodes:
    """The `VisionSystem` object of one line, under Objects, named after the line.

    NodeIds are strings in the application namespace (`line1`, `line1.VisionStateMachine`, ...,
    `line1.PLC.Trigger`); browse names of standard members are in the Machine Vision namespace.
    """
    mv, app = types.mv, types.app
    ids = types.ids

    def nid(path: str = "") -> ua.NodeId:
        return ua.NodeId(f"{line}.{path}" if path else line, app)

    system = await _typed_object(
        server.nodes.objects, nid(), ua.QualifiedName(line, app), ids["VisionSystemType"]
    )
    sm = await _typed_object(
        system,
        nid("VisionStateMachine"),
        ua.QualifiedName("VisionStateMachine", mv),
        ids["VisionStateMachineType"],
    )
    current, current_id, current_number = await _current_state(
        sm, f"{line}.VisionStateMachine.CurrentState", app
    )
    automatic = await _typed_object(
        sm,
        nid("VisionStateMachine.AutomaticModeStateMachine"),
        ua.QualifiedName("AutomaticModeStateMachine", mv),
        ids["VisionAutomaticModeStateMachineType"],
    )
    auto_state, auto_id, auto_number = await _current_state(
        automatic, f"{line}.VisionStateMachine.AutomaticModeStateMachine.CurrentState", app
    )
    recipes = await _typed_object(
        system, nid("RecipeManagement"), ua.QualifiedName("RecipeManagement", mv), ids["RecipeManagementType"]
    )
    results = await _typed_object(
        system, nid("ResultManagement"), ua.QualifiedName("ResultManagement", mv), ids["ResultManagementType"]
    )
    folder = await _typed_object(
        results, nid("ResultManagement.Results"), ua.QualifiedName("Results", mv), ids["ResultFolderType"]
    )
    latest_node = await folder.add_variable(
        nid("LatestResult"),
        ua.QualifiedName("LatestResult", app),
        ua.Variant(placeholder_result(types), ua.VariantType.ExtensionObject),
        datatype=ids["ResultDataType"],
    )
    # a ResultType variable (OPC 40100-1 §9.1) whose value is the whole ResultDataType
    await _retype(latest_node, ua.ObjectIds.BaseDataVariableType, ids["ResultType"])

    parents = {
        "state_machine": (sm, "VisionStateMachine"),
        "automatic": (automatic, "VisionStateMachine.AutomaticModeStateMachine"),
        "recipes": (recipes, "RecipeManagement"),
        "results": (results, "ResultManagement"),
    }
    methods: dict[str, Node] = {}
    for name, (parent, inputs, outputs) in method_signatures(types).items():
        owner, path = parents[parent]
        methods[name] = await owner.add_method(
            nid(f"{path}.{name}"), ua.QualifiedName(name, mv), None, inputs, outputs
        )

    plc_folder = await system.add_folder(nid("PLC"), ua.QualifiedName("PLC", app))
    plc: dict[str, Node] = {}
    for name, (value, vtype, writable) in PLC_TAGS.items():
        node = await plc_folder.add_variable(
            nid(f"PLC.{name}"), ua.QualifiedName(name, app), ua.Variant(value, vtype)
        )
        if writable:
            await node.set_writable()
        plc[name] = node

    state_nodes = {name: ids[f"state:{name}"] for name in (*VISION_STATES, *AUTOMATIC_STATES)}
    return VisionSystemNodes(
        line=line,
        system=system,
        state_machine=sm,
        current_state=current,
        current_state_id=current_id,
        current_state_number=current_number,
        automatic=automatic,
        automatic_state=auto_state,
        automatic_state_id=auto_id,
        automatic_state_number=auto_number,
        state_nodes=state_nodes,
        latest_result=latest_node,
        methods=methods,
        plc=plc,
    )
