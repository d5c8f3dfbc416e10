"""The information model: one official VisionSystemType instance per line, and results as OPC UA values.

The Machine Vision types come from the official NodeSet (`opcua.nodeset`); this module adds the two
vendor structures carried in `ResultContent` (application namespace), instantiates each line's
`VisionSystem` from the official types (mandatory members, plus the optional ones the agent serves)
and turns a `contract.InspectionResult` into `ResultDataType` values. No values change here except
initial ones; the server writes them.

Instance NodeIds are strings in the application namespace, built by asyncua from the browse path:
`line1`, `line1.VisionStateMachine.AutomaticModeStateMachine.StartSingleJob`,
`line1.ResultManagement.Results.LatestResult`, `line1.PLC.Trigger`, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from asyncua import Server, ua
from asyncua.common.instantiate_util import instantiate
from asyncua.common.manage_nodes import create_encoding
from asyncua.common.node import Node
from asyncua.common.structures104 import load_custom_struct, new_struct_field

from contract import InspectionResult, ModelInfo
from opcua.backend import LineConfiguration, configuration_id
from opcua.nodeset import MV

# StateNumber values of the official states (OPC 40100-1 tables 82 and 97; in the NodeSet).
VISION_STATES = {"Preoperational": 1, "Halted": 2, "Error": 3, "Operational": 4}
AUTOMATIC_STATES = {"Initialized": 5, "Ready": 6, "SingleExecution": 7, "ContinuousExecution": 8}
# official NodeIds of those states, declared on the state machine types
STATE_IDS = {
    "Preoperational": 5028,
    "Halted": 5029,
    "Error": 5030,
    "Operational": 5031,
    "Initialized": 5056,
    "Ready": 5057,
    "SingleExecution": 5058,
    "ContinuousExecution": 5059,
}
RESULT_STATE_COMPLETED = 1
RESULT_STATE_UNDEFINED = 0  # "indicates an error" (OPC 40100-1 §12.19)

# vendor structures in the application namespace (Default Binary encoding of i=N is i=N+2000)
_APP_IDS = {"DefectDataType": 3001, "InspectionContentDataType": 3002, "CameraComponentDataType": 3003}
_ENCODING_OFFSET = 2000

# ResultType children (OPC 40100-1 §9.1), in the order of ResultDataType's fields
RESULT_FIELDS = (
    "ResultId",
    "HasTransferableDataOnFile",
    "IsPartial",
    "IsSimulated",
    "ResultState",
    "MeasId",
    "PartId",
    "ExternalRecipeId",
    "InternalRecipeId",
    "ProductId",
    "ExternalConfigurationId",
    "InternalConfigurationId",
    "JobId",
    "CreationTime",
    "ProcessingTimes",
    "ResultContent",
)
# ResultReadyEventType's own properties: ResultDataType's fields but HasTransferableDataOnFile
EVENT_FIELDS = tuple(f for f in RESULT_FIELDS if f != "HasTransferableDataOnFile")

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

# where each served method sits: name -> path of its object below the VisionSystem
METHOD_OWNERS = {
    "Halt": "VisionStateMachine",
    "Reset": "VisionStateMachine",
    "SelectModeAutomatic": "VisionStateMachine",
    "StartSingleJob": "VisionStateMachine.AutomaticModeStateMachine",
    "StartContinuous": "VisionStateMachine.AutomaticModeStateMachine",
    "Stop": "VisionStateMachine.AutomaticModeStateMachine",
    "Abort": "VisionStateMachine.AutomaticModeStateMachine",
    "PrepareRecipe": "RecipeManagement",
    "UnprepareRecipe": "RecipeManagement",
    "GetRecipeListFiltered": "RecipeManagement",
    "GetResultById": "ResultManagement",
    "GetResultComponentsById": "ResultManagement",
    "GetResultListFiltered": "ResultManagement",
    "ReleaseResultHandle": "ResultManagement",
    "ActivateConfiguration": "ConfigurationManagement",
    "GetConfigurationById": "ConfigurationManagement",
    "GetConfigurationList": "ConfigurationManagement",
}
# optional methods of the official types that are served: name -> NodeId (MV) of their declaration
_OPTIONAL_METHODS = {"SelectModeAutomatic": 7095, "ReleaseResultHandle": 7090}
READ_ONLY_METHODS = (
    "GetRecipeListFiltered",
    "GetResultById",
    "GetResultComponentsById",
    "GetResultListFiltered",
    "ReleaseResultHandle",
    "GetConfigurationById",
    "GetConfigurationList",
)


@dataclass
class MvTypes:
    """Namespace indexes, NodeIds and Python classes of the types, for one server."""

    mv: int  # namespace index of the Machine Vision URI
    app: int  # namespace index of the application URI
    vendor: dict[str, type] = field(default_factory=dict)
    _classes: dict[str, type] = field(default_factory=dict, repr=False)

    def id(self, name: str) -> ua.NodeId:
        """Official NodeId of a Machine Vision node named in `nodeset.MV`, or a vendor type."""
        if name in _APP_IDS:
            return ua.NodeId(_APP_IDS[name], self.app)
        return ua.NodeId(getattr(MV, name), self.mv)

    def new(self, name: str, **values: Any) -> Any:
        cls = self._classes.get(name)
        if cls is None:  # once per name: this is on the result hot path
            cls = self._classes[name] = self.vendor.get(name) or getattr(ua, name)
        return cls(**values)


@dataclass
class StateMachineNodes:
    """CurrentState and LastTransition of one state machine instance."""

    node: Node
    current: Node
    current_id: Node
    current_number: Node
    last: Node
    last_id: Node
    last_number: Node
    last_time: Node
    last_effective_time: Node


@dataclass
class VisionSystemNodes:
    """The nodes of one line's VisionSystem that the server writes to or links methods on."""

    line: str
    system: Node
    vision: StateMachineNodes
    automatic: StateMachineNodes
    latest_result: Node
    latest_children: dict[str, Node]
    system_state: Node
    diagnostic_level: Node
    active_configuration: Node
    methods: dict[str, Node]
    plc: dict[str, Node]


def _field(
    name: str, dtype: ua.NodeId | ua.VariantType, *, array: bool = False, optional: bool = False
) -> ua.StructureField:
    return new_struct_field(name, dtype, array=array, optional=optional)


async def _vendor_struct(server: Server, app: int, name: str, fields: list[ua.StructureField]) -> ua.NodeId:
    """A vendor structure with its full definition and a Default Binary encoding."""
    nodeid = ua.NodeId(_APP_IDS[name], app)
    dtype = await server.nodes.base_structure_type.add_data_type(nodeid, ua.QualifiedName(name, app))
    enc = await create_encoding(
        dtype, ua.NodeId(_APP_IDS[name] + _ENCODING_OFFSET, app), ua.QualifiedName("Default Binary", 0)
    )
    sdef = ua.StructureDefinition(
        DefaultEncodingId=enc.nodeid,
        BaseDataType=ua.NodeId(ua.ObjectIds.Structure),
        StructureType=ua.StructureType.Structure,
        Fields=fields,
    )
    await dtype.write_data_type_definition(sdef)
    return nodeid


async def build_vendor_types(server: Server, mv: int, app: int) -> MvTypes:
    """The structures of `ResultContent` (application namespace); generate their Python classes."""
    types = MvTypes(mv=mv, app=app)
    defect = await _vendor_struct(
        server,
        app,
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
    await _vendor_struct(
        server,
        app,
        "InspectionContentDataType",
        [
            _field("Verdict", ua.VariantType.String),
            _field("Reasons", ua.VariantType.String, array=True),
            _field("DefectCount", ua.VariantType.UInt32),
            _field("Defects", defect, array=True),
            _field("Site", ua.VariantType.String),
            _field("Line", ua.VariantType.String),
            _field("Seq", ua.VariantType.Int64),
            _field("ModelName", ua.VariantType.String),
            _field("ModelVersion", ua.VariantType.String),
            _field("BodyJson", ua.VariantType.String),  # the whole result body, schemas/result.schema.json
            _field("AnomalyScore", ua.VariantType.Double),  # highest of the cameras'; NaN: no anomaly model
        ],
    )
    await _vendor_struct(
        server,
        app,
        "CameraComponentDataType",  # GetResultComponentsById: one per camera of the part
        [
            _field("Camera", ua.VariantType.String),
            _field("Width", ua.VariantType.UInt32),
            _field("Height", ua.VariantType.UInt32),
            _field("SourceRef", ua.VariantType.String),
            _field("Defects", defect, array=True),
            _field("ImageFile", ua.VariantType.String),  # the archived image, "" when none was kept
            _field("Image", ua.VariantType.ByteString),  # its encoded bytes (JPEG/PNG), empty when none
            _field("AnomalyScore", ua.VariantType.Double),  # this camera's; NaN without an anomaly model
        ],
    )
    # generate only the vendor classes (the official ones came with the NodeSet import)
    for name, type_id in _APP_IDS.items():
        types.vendor[name] = await load_custom_struct(server.get_node(ua.NodeId(type_id, app)))
    return types


# -- results as OPC UA values -------------------------------------------------------------------------
def configuration_id_of(types: MvTypes, line: str, model: ModelInfo) -> Any:
    """InternalConfigurationId of a result: the line's configuration when the result was made."""
    return types.new("ConfigurationIdDataType", Id=configuration_id(line, model.name), Version=model.version)


def configuration_to_ua(types: MvTypes, conf: LineConfiguration) -> Any:
    """A line's configuration as ConfigurationDataType (ActiveConfiguration, GetConfiguration*)."""
    internal = types.new(
        "ConfigurationIdDataType",
        Id=conf.id,
        Version=conf.version,
        Hash=bytes.fromhex(conf.sha256),
        HashAlgorithm="SHA-256",
        Description=ua.LocalizedText(conf.description),
    )
    return types.new(
        "ConfigurationDataType",
        HasTransferableDataOnFile=False,
        ExternalId=internal,
        InternalId=internal,
        LastModified=conf.last_modified,
    )


def _defect_to_ua(types: MvTypes, d: Any) -> Any:
    return types.new(
        "DefectDataType",
        Camera=d.camera,
        ClassName=d.class_name,
        ClassId=d.class_id,
        Confidence=float(d.confidence),
        Xyxy=[float(v) for v in d.xyxy],
        AreaPx=float(d.area_px),
        AreaMm2=float(d.area_mm2) if d.area_mm2 is not None else float("nan"),
        CountsForVerdict=d.counts_for_verdict,
    )


def content_to_ua(types: MvTypes, result: InspectionResult) -> Any:
    return types.new(
        "InspectionContentDataType",
        Verdict=result.verdict,
        Reasons=list(result.reasons),
        DefectCount=sum(1 for d in result.defects if d.counts_for_verdict),
        Defects=[_defect_to_ua(types, d) for d in result.defects],
        Site=result.site,
        Line=result.line,
        Seq=result.seq or 0,
        ModelName=result.model.name,
        ModelVersion=result.model.version,
        BodyJson=result.to_json(),
        AnomalyScore=max((float(a.score) for a in result.anomaly), default=float("nan")),
    )


def camera_components_to_ua(
    types: MvTypes, result: InspectionResult, images: dict[str, tuple[str, bytes]]
) -> list[Any]:
    """One CameraComponentDataType per camera: its frame, its defects and the archived image."""
    cameras = [f.camera for f in result.frames] or sorted({d.camera for d in result.defects})
    frames = {f.camera: f for f in result.frames}
    out = []
    for cam in cameras:
        frame = frames.get(cam)
        path, data = images.get(cam, ("", b""))
        out.append(
            types.new(
                "CameraComponentDataType",
                Camera=cam,
                Width=frame.width if frame else 0,
                Height=frame.height if frame else 0,
                SourceRef=(frame.source_ref or "") if frame else "",
                Defects=[_defect_to_ua(types, d) for d in result.defects if d.camera == cam],
                ImageFile=path,
                Image=data,
                AnomalyScore=next((float(a.score) for a in result.anomaly if a.camera == cam), float("nan")),
            )
        )
    return out


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def result_to_ua(types: MvTypes, result: InspectionResult) -> Any:
    """A journaled result as a complete `ResultDataType` value (every optional field filled)."""
    timings = result.timings_ms
    end = _utc(result.timestamp)
    total_ms = float(timings.get("total", sum(timings.values())))
    new = types.new
    return new(
        "ResultDataType",
        ResultId=new("ResultIdDataType", Id=result.result_id),
        HasTransferableDataOnFile=False,
        IsPartial=False,
        IsSimulated=False,
        ResultState=RESULT_STATE_COMPLETED,
        MeasId=new("MeasIdDataType", Id=result.meas_id or ""),
        PartId=new("PartIdDataType", Id=result.part_id),
        ExternalRecipeId=new("RecipeIdExternalDataType", Id=result.recipe),
        InternalRecipeId=new("RecipeIdInternalDataType", Id=result.recipe),
        ProductId=new("ProductIdDataType", Id=result.product_id or ""),
        ExternalConfigurationId=new(
            "ConfigurationIdDataType", Id=result.model.name, Version=result.model.version
        ),
        InternalConfigurationId=configuration_id_of(types, result.line, result.model),
        JobId=new("JobIdDataType", Id=result.job_id or ""),
        CreationTime=end,
        ProcessingTimes=new(
            "ProcessingTimesDataType",
            StartTime=end - timedelta(milliseconds=total_ms),
            EndTime=end,
            AcquisitionDuration=float(timings.get("capture", 0.0)),
            ProcessingDuration=total_ms,
        ),
        ResultContent=[ua.Variant(content_to_ua(types, result), ua.VariantType.ExtensionObject)],
    )


def empty_result(types: MvTypes, line: str = "") -> Any:
    """A typed, complete ResultDataType with ResultState Undefined: before the first result, and the
    `Result` of a GetResultById that found nothing."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    new = types.new
    return new(
        "ResultDataType",
        ResultId=new("ResultIdDataType", Id=""),
        HasTransferableDataOnFile=False,
        IsPartial=False,
        IsSimulated=False,
        ResultState=RESULT_STATE_UNDEFINED,
        MeasId=new("MeasIdDataType", Id=""),
        PartId=new("PartIdDataType", Id=""),
        ExternalRecipeId=new("RecipeIdExternalDataType", Id=""),
        InternalRecipeId=new("RecipeIdInternalDataType", Id=""),
        ProductId=new("ProductIdDataType", Id=""),
        ExternalConfigurationId=new("ConfigurationIdDataType", Id="", Version=""),
        InternalConfigurationId=new("ConfigurationIdDataType", Id="", Version=""),
        JobId=new("JobIdDataType", Id=""),
        CreationTime=epoch,
        ProcessingTimes=new(
            "ProcessingTimesDataType",
            StartTime=epoch,
            EndTime=epoch,
            AcquisitionDuration=0.0,
            ProcessingDuration=0.0,
        ),
        ResultContent=[],
    )


def result_event_text(result: InspectionResult) -> tuple[str, int]:
    """(Message, Severity) of a result's ResultReadyEvent, live or historical."""
    severity = 500 if result.verdict == "NG" else 100
    return f"{result.verdict} part {result.part_id} (seq {result.seq})", severity


def result_field_variants(types: MvTypes, value: Any) -> dict[str, ua.Variant]:
    """The ResultType child variables / ResultReadyEventType properties of a ResultDataType value."""
    x = ua.VariantType.ExtensionObject
    boolean = ua.VariantType.Boolean
    kinds = {
        "HasTransferableDataOnFile": boolean,
        "IsPartial": boolean,
        "IsSimulated": boolean,
        "ResultState": ua.VariantType.Int32,
        "CreationTime": ua.VariantType.DateTime,
        "ResultContent": ua.VariantType.Variant,
    }
    return {name: ua.Variant(getattr(value, name), kinds.get(name, x)) for name in RESULT_FIELDS}


def system_state_to_ua(types: MvTypes, state: str, description: str) -> Any:
    """SystemStateDescriptionDataType from a line state (SEMI E10 states of OPC 40100-1 §12.22)."""
    semi = {
        "running": "PRD_1",
        "paused": "SBY_2",
        "starting": "ENG_3",
        "stopped": "SDT_4",
        "degraded": "UDT_5",
        "error": "UDT_5",
    }.get(state, "NST_6")
    enum = ua.SystemStateDataType
    return types.new(
        "SystemStateDescriptionDataType", State=getattr(enum, semi), StateDescription=description
    )


# -- instances ----------------------------------------------------------------------------------------
async def _child(node: Node, *path: str) -> Node:
    return await node.get_child(list(path))


async def _instance(
    parent: Node, type_id: ua.NodeId, nodeid: ua.NodeId, bname: ua.QualifiedName, *, optional: bool = False
) -> Node:
    """An instance of `type_id` with its mandatory members (asyncua copies the declarations;
    child NodeIds are `<parent id>.<browse name>` because the root id is a string)."""
    # asyncua warns for every VariableType attribute that types lack (AccessLevel, ...): expected here
    logging.getLogger("asyncua.common.copy_node_util").setLevel(logging.ERROR)
    nodes = await instantiate(
        parent,
        Node(parent.session, type_id),
        nodeid=nodeid,
        bname=bname,
        dname=ua.LocalizedText(bname.Name),
        instantiate_optional=optional,
    )
    return nodes[0]


async def _state_machine_nodes(server: Server, sm: Node, nid: str, app: int) -> StateMachineNodes:
    current = await _child(sm, "0:CurrentState")
    number = await current.add_property(
        ua.NodeId(f"{nid}.CurrentState.Number", app),
        ua.QualifiedName("Number", 0),
        ua.Variant(0, ua.VariantType.UInt32),
    )
    last = await _instance(
        sm,
        ua.NodeId(ua.ObjectIds.FiniteTransitionVariableType),
        ua.NodeId(f"{nid}.LastTransition", app),
        ua.QualifiedName("LastTransition", 0),
        optional=True,
    )
    await server.write_attribute_value(last.nodeid, ua.DataValue(ua.Variant(ua.LocalizedText(""))))
    return StateMachineNodes(
        node=sm,
        current=current,
        current_id=await _child(current, "0:Id"),
        current_number=number,
        last=last,
        last_id=await _child(last, "0:Id"),
        last_number=await _child(last, "0:Number"),
        last_time=await _child(last, "0:TransitionTime"),
        last_effective_time=await _child(last, "0:EffectiveTransitionTime"),
    )


async def _declared_method(
    server: Server, owner: Node, nodeid: ua.NodeId, decl: ua.NodeId, mv: int, name: str
) -> Node:
    """An optional method of the official type on an instance, with the declaration's arguments."""
    decl_node = server.get_node(decl)
    inputs: list[ua.Argument] = []
    outputs: list[ua.Argument] = []
    for prop in await decl_node.get_properties():
        bname = (await prop.read_browse_name()).Name
        if bname == "InputArguments":
            inputs = await prop.read_value()
        elif bname == "OutputArguments":
            outputs = await prop.read_value()
    method = await owner.add_method(nodeid, ua.QualifiedName(name, mv), None, inputs, outputs)
    # as declared: InputArguments/OutputArguments are one-dimensional arrays of their arguments
    for prop in await method.get_properties():
        count = len(await prop.read_value())
        for attr, variant in (
            (ua.AttributeIds.ValueRank, ua.Variant(ua.ValueRank.OneDimension, ua.VariantType.Int32)),
            (ua.AttributeIds.ArrayDimensions, ua.Variant([count], ua.VariantType.UInt32)),
        ):
            await server.write_attribute_value(prop.nodeid, ua.DataValue(variant), attr)
    return method


async def _read_only_variables(server: Server, nodes: list[Node]) -> None:
    # the NodeSet's declarations are AccessLevel 3 (read+write): instance values are the server's
    attrs = []
    for node in nodes:
        if await node.read_node_class() == ua.NodeClass.Variable:
            for attr in (ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel):
                attrs.append((node.nodeid, attr))
    for nodeid, attr in attrs:
        await server.write_attribute_value(
            nodeid, ua.DataValue(ua.Variant(ua.AccessLevel.CurrentRead.mask, ua.VariantType.Byte)), attr
        )


async def build_vision_system(server: Server, types: MvTypes, line: str) -> VisionSystemNodes:
    """The `VisionSystem` object of one line (official VisionSystemType), under Objects."""
    mv, app = types.mv, types.app

    def nid(path: str = "") -> ua.NodeId:
        return ua.NodeId(f"{line}.{path}" if path else line, app)

    def qn(name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, mv)

    system = await _instance(
        server.nodes.objects, types.id("VisionSystemType"), nid(), ua.QualifiedName(line, app)
    )
    sm = await _child(system, f"{mv}:VisionStateMachine")
    # the four state objects are Mandatory members of VisionSystemType's VisionStateMachine (ns=1;i=5101,
    # 5106, 5107, 5108), each with its StateNumber: kept, with the numbers CurrentState/Number reports
    for state, number in VISION_STATES.items():
        state_number = await _child(sm, f"{mv}:{state}", "0:StateNumber")
        await server.write_attribute_value(
            state_number.nodeid, ua.DataValue(ua.Variant(number, ua.VariantType.UInt32))
        )
    automatic = await _instance(
        sm,
        types.id("VisionAutomaticModeStateMachineType"),
        nid("VisionStateMachine.AutomaticModeStateMachine"),
        qn("AutomaticModeStateMachine"),
    )
    recipes = await _instance(
        system, types.id("RecipeManagementType"), nid("RecipeManagement"), qn("RecipeManagement")
    )
    results = await _instance(
        system, types.id("ResultManagementType"), nid("ResultManagement"), qn("ResultManagement")
    )
    config = await _instance(
        system,
        types.id("ConfigurationManagementType"),
        nid("ConfigurationManagement"),
        qn("ConfigurationManagement"),
    )
    folder = await _instance(
        results, types.id("ResultFolderType"), nid("ResultManagement.Results"), qn("Results")
    )
    latest = await _instance(
        folder,
        types.id("ResultType"),
        nid("ResultManagement.Results.LatestResult"),
        ua.QualifiedName("LatestResult", app),
        optional=True,  # every child of ResultType, kept in step with the value
    )
    await server.write_attribute_value(
        latest.nodeid, ua.DataValue(ua.Variant(empty_result(types), ua.VariantType.ExtensionObject))
    )
    latest_children = {name: await _child(latest, f"{mv}:{name}") for name in RESULT_FIELDS}
    # the NodeSet leaves ResultContent's DataType out (BaseDataType is meant)
    await server.write_attribute_value(
        latest_children["ResultContent"].nodeid,
        ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.BaseDataType), ua.VariantType.NodeId)),
        ua.AttributeIds.DataType,
    )
    for name, variant in result_field_variants(types, empty_result(types)).items():
        await server.write_attribute_value(latest_children[name].nodeid, ua.DataValue(variant))

    system_state = await system.add_variable(
        nid("SystemState"),
        qn("SystemState"),
        ua.Variant(system_state_to_ua(types, "starting", ""), ua.VariantType.ExtensionObject),
        datatype=types.id("SystemStateDescriptionDataType"),
    )
    diagnostic = await system.add_variable(
        nid("DiagnosticLevel"),
        qn("DiagnosticLevel"),
        ua.Variant(0, ua.VariantType.UInt16),
        datatype=ua.NodeId(ua.ObjectIds.UInt16),
    )
    active_config = await _child(config, f"{mv}:ActiveConfiguration")

    vision = await _state_machine_nodes(server, sm, f"{line}.VisionStateMachine", app)
    auto = await _state_machine_nodes(
        server, automatic, f"{line}.VisionStateMachine.AutomaticModeStateMachine", app
    )
    owners = {
        "VisionStateMachine": sm,
        "VisionStateMachine.AutomaticModeStateMachine": automatic,
        "RecipeManagement": recipes,
        "ResultManagement": results,
        "ConfigurationManagement": config,
    }
    methods: dict[str, Node] = {}
    for name, path in METHOD_OWNERS.items():
        if name in _OPTIONAL_METHODS:
            methods[name] = await _declared_method(
                server, owners[path], nid(f"{path}.{name}"), ua.NodeId(_OPTIONAL_METHODS[name], mv), mv, name
            )
        else:
            methods[name] = await _child(owners[path], f"{mv}:{name}")

    created = [latest, *latest_children.values(), system_state, diagnostic, active_config]
    for owner in owners.values():
        created.extend(await owner.get_variables())
    await _read_only_variables(server, created)

    plc_folder = await system.add_folder(nid("PLC"), ua.QualifiedName("PLC", app))
    plc: dict[str, Node] = {}
    for name, (value, vtype, writable) in PLC_TAGS.items():
        node = await plc_folder.add_variable(
            nid(f"PLC.{name}"), ua.QualifiedName(name, app), ua.Variant(value, vtype)
        )
        if writable:
            await node.set_writable()
        plc[name] = node

    return VisionSystemNodes(
        line=line,
        system=system,
        vision=vision,
        automatic=auto,
        latest_result=latest,
        latest_children=latest_children,
        system_state=system_state,
        diagnostic_level=diagnostic,
        active_configuration=active_config,
        methods=methods,
        plc=plc,
    )
