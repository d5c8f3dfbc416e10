"""Every Machine Vision method: argument checking as OPC 10000-4 says, and the OPC 40100 Error values.

Negative calls go through the raw Call service so the operation StatusCode and the per-argument
InputArgumentResults can be read (a Node.call_method would only raise).
"""

from __future__ import annotations

import asyncio

from asyncua import Client, Node, ua
from asyncua.common.ua_utils import data_type_to_variant_type

from opcua.methods import Err
from opcua.model import METHOD_OWNERS
from tests.opcua.lines import make_result
from tests.opcua.opcua_helpers import empty_args, namespaces, vision_node, wait_value

BAD = ua.StatusCodes


async def _node_for(client: Client, line: str, method: str):
    ns = await namespaces(client)
    path = [f"mv:{p}" for p in METHOD_OWNERS[method].split(".")]
    owner = await vision_node(client, line, *path)
    return owner, await owner.get_child(f"{ns.mv}:{method}")


async def _valid_args(method_node) -> list[ua.Variant]:
    """A well-typed argument list from the method's own InputArguments (empty ids, zeros)."""
    args = []
    props = {(await p.read_browse_name()).Name: p for p in await method_node.get_properties()}
    if "InputArguments" not in props:
        return args
    for arg in await props["InputArguments"].read_value():
        if arg.ValueRank >= 1:
            args.append(ua.Variant([], ua.VariantType.Variant))
        elif arg.DataType in ua.extension_objects_by_datatype:
            value = ua.extension_objects_by_datatype[arg.DataType]()
            if hasattr(value, "Id"):
                value.Id = ""
            args.append(ua.Variant(value, ua.VariantType.ExtensionObject))
        else:
            base = await data_type_to_variant_type(Node(method_node.session, arg.DataType))
            args.append(ua.Variant(ua.get_default_value(base), base))
    return args


def _wrong(variant: ua.Variant) -> ua.Variant:
    """A Variant of another type than `variant`'s."""
    if variant.VariantType == ua.VariantType.ExtensionObject:
        return ua.Variant("not a structure", ua.VariantType.String)
    return ua.Variant(ua.JobIdDataType(Id="x"), ua.VariantType.ExtensionObject)


async def _call(client: Client, object_id: ua.NodeId, method_id: ua.NodeId, args: list[ua.Variant]):
    request = ua.CallMethodRequest(ObjectId=object_id, MethodId=method_id, InputArguments=args)
    (result,) = await client.uaclient.call([request])
    return result


async def test_every_method_checks_its_arguments_and_object(demo_server):
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        other_object = (await vision_node(client, "plc1")).nodeid
        checked = []
        for method in METHOD_OWNERS:
            owner, node = await _node_for(client, "line1", method)
            args = await _valid_args(node)
            result = await _call(
                client, owner.nodeid, node.nodeid, [*args, ua.Variant(1, ua.VariantType.Int32)]
            )
            assert result.StatusCode.value == BAD.BadTooManyArguments, method
            result = await _call(client, other_object, node.nodeid, args)
            assert result.StatusCode.value == BAD.BadMethodInvalid, method
            if args:
                result = await _call(client, owner.nodeid, node.nodeid, args[:-1])
                assert result.StatusCode.value == BAD.BadArgumentsMissing, method
                for i in range(len(args)):
                    wrong = [*args[:i], _wrong(args[i]), *args[i + 1 :]]
                    result = await _call(client, owner.nodeid, node.nodeid, wrong)
                    assert result.StatusCode.value == BAD.BadTypeMismatch, (method, i)
                    assert [r.value for r in result.InputArgumentResults] == [
                        BAD.BadTypeMismatch if j == i else BAD.Good for j in range(len(args))
                    ], (method, i)
            checked.append(method)
        assert len(checked) == 17

        # a structure of the wrong Machine Vision type (same layout, other DataType) is a mismatch too
        ns = await namespaces(client)
        recipes = await vision_node(client, "line1", "mv:RecipeManagement")
        prepare = await recipes.get_child(f"{ns.mv}:PrepareRecipe")
        internal_for_external = [
            ua.Variant(ua.RecipeIdInternalDataType(Id="strict"), ua.VariantType.ExtensionObject),
            ua.Variant(ua.RecipeIdInternalDataType(Id=""), ua.VariantType.ExtensionObject),
        ]
        result = await _call(client, recipes.nodeid, prepare.nodeid, internal_for_external)
        assert result.StatusCode.value == BAD.BadTypeMismatch
        assert [r.value for r in result.InputArgumentResults] == [BAD.BadTypeMismatch, BAD.Good]
        # the call did nothing
        assert demo_server.lines["line1"].active_recipe == "default"


def _start_args(recipe: str = "") -> tuple:
    return (
        ua.MeasIdDataType(Id=""),
        ua.PartIdDataType(Id=""),
        ua.RecipeIdExternalDataType(Id=recipe),
        ua.ProductIdDataType(Id=""),
        empty_args(),
    )


CAUSE = (ua.Variant(0, ua.VariantType.Int32), ua.Variant("", ua.VariantType.String))


async def test_method_error_values(demo_server):
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        auto = await vision_node(client, "line1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine")
        free_auto = await vision_node(
            client, "free1", "mv:VisionStateMachine", "mv:AutomaticModeStateMachine"
        )
        sm = await vision_node(client, "line1", "mv:VisionStateMachine")
        recipes = await vision_node(client, "line1", "mv:RecipeManagement")
        state = await auto.get_child("0:CurrentState")
        await wait_value(state, ua.LocalizedText("Ready"))

        job, error = await free_auto.call_method(f"{ns.mv}:StartContinuous", *_start_args("no-such"))
        assert (job.Id, error) == ("", Err.UNKNOWN_RECIPE)
        job, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *_start_args("no-such"))
        assert (job.Id, error) == ("", Err.UNKNOWN_RECIPE)
        assert await auto.call_method(f"{ns.mv}:Stop", *CAUSE) == Err.NOT_READY  # nothing executing
        assert await sm.call_method(f"{ns.mv}:SelectModeAutomatic") == Err.NOT_READY  # already Operational

        # UnprepareRecipe: Ready -> Initialized, where no job starts; PrepareRecipe: back to Ready
        out, error = await recipes.call_method(
            f"{ns.mv}:UnprepareRecipe",
            ua.RecipeIdExternalDataType(Id="strict"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert error == Err.NOT_READY  # "strict" is not the prepared recipe
        out, error = await recipes.call_method(
            f"{ns.mv}:UnprepareRecipe",
            ua.RecipeIdExternalDataType(Id="nope"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert error == Err.UNKNOWN_RECIPE
        out, error = await recipes.call_method(
            f"{ns.mv}:UnprepareRecipe", ua.RecipeIdExternalDataType(Id=""), ua.RecipeIdInternalDataType(Id="")
        )
        assert (out.Id, error) == ("default", Err.OK)
        await wait_value(state, ua.LocalizedText("Initialized"))
        _, error = await auto.call_method(f"{ns.mv}:StartSingleJob", *_start_args())
        assert error == Err.NOT_READY
        _, _, _, prepared, _ = await recipes.call_method(
            f"{ns.mv}:GetRecipeListFiltered",
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            ua.Variant(1, ua.VariantType.Int32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.Int32),
        )
        assert prepared == []
        _, completed, error = await recipes.call_method(
            f"{ns.mv}:PrepareRecipe",
            ua.RecipeIdExternalDataType(Id="default"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert (completed, error) == (True, Err.OK)
        await wait_value(state, ua.LocalizedText("Ready"))


async def test_result_handles_components_and_configuration(demo_server):
    stored = demo_server.journal.append(make_result("line1", part_id="COMP-1X", job_id="job-comp"))
    async with Client(demo_server.url, timeout=30) as client:
        await client.load_data_type_definitions()
        ns = await namespaces(client)
        results = await vision_node(client, "line1", "mv:ResultManagement")
        timeout = ua.Variant(0, ua.VariantType.Int32)

        handle, result, error = await results.call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id=stored.result_id), timeout
        )
        assert error == Err.OK and handle > 0 and result.PartId.Id == "COMP-1X"
        assert (
            await results.call_method(
                f"{ns.mv}:ReleaseResultHandle", ua.Variant(handle, ua.VariantType.UInt32)
            )
            == 0
        )
        assert (
            await results.call_method(
                f"{ns.mv}:ReleaseResultHandle", ua.Variant(handle, ua.VariantType.UInt32)
            )
            == Err.UNKNOWN_HANDLE
        )
        # another line's result is not this line's
        _, _, error = await (await vision_node(client, "plc1", "mv:ResultManagement")).call_method(
            f"{ns.mv}:GetResultById", ua.ResultIdDataType(Id=stored.result_id), timeout
        )
        assert error == Err.NOT_FOUND

        out = await results.call_method(
            f"{ns.mv}:GetResultComponentsById", ua.ResultIdDataType(Id=stored.result_id), timeout
        )
        assert len(out) == 17 and out[-1] == Err.OK
        (has_file, handle, is_partial, _sim, state, _meas, part, *_rest) = out
        assert (has_file, is_partial, state, part.Id) == (False, False, 1, "COMP-1X")
        assert out[12].Id == "job-comp"  # JobId
        content = [v.Value for v in out[15]]
        assert content[0].Verdict == "NG" and content[0].DefectCount == 1
        (camera,) = content[1:]
        assert (camera.Camera, camera.Width, camera.Height) == ("top", 64, 48)
        assert [d.ClassName for d in camera.Defects] == ["scratch"]
        assert (camera.ImageFile, camera.Image) == ("", b"")  # no archive behind this server
        missing = await results.call_method(
            f"{ns.mv}:GetResultComponentsById", ua.ResultIdDataType(Id="nope"), timeout
        )
        assert missing[-1] == Err.NOT_FOUND and missing[4] == 0

        # a result journaled while the call waits is found within its Timeout
        original = make_result("line1", part_id="LATE-1")
        future_id = original.result_id

        async def journal_with_id() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(demo_server.journal.append, original)

        task = asyncio.ensure_future(journal_with_id())
        _, result, error = await results.call_method(
            f"{ns.mv}:GetResultById",
            ua.ResultIdDataType(Id=future_id),
            ua.Variant(5000, ua.VariantType.Int32),
        )
        await task
        assert error == Err.OK and result.PartId.Id == "LATE-1"

        config = await vision_node(client, "line1", "mv:ConfigurationManagement")
        active = await (await config.get_child(f"{ns.mv}:ActiveConfiguration")).read_value()
        line = demo_server.lines["line1"]
        assert active.InternalId.Id == "line1:tiny" and active.InternalId.Version == "7"
        assert active.InternalId.Hash == bytes.fromhex(line.configuration().sha256)
        assert active.InternalId.HashAlgorithm == "SHA-256"
        assert result.InternalConfigurationId.Id == active.InternalId.Id  # what results refer to
        complete, count, _, listed, error = await config.call_method(
            f"{ns.mv}:GetConfigurationList",
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            timeout,
        )
        assert (complete, count, error) == (True, 1, 0) and listed[0].InternalId.Id == "line1:tiny"
        _, by_id, error = await config.call_method(
            f"{ns.mv}:GetConfigurationById", ua.ConfigurationIdDataType(Id="line1:tiny"), timeout
        )
        assert error == 0 and by_id.InternalId.Hash == active.InternalId.Hash
        _, _, error = await config.call_method(
            f"{ns.mv}:GetConfigurationById", ua.ConfigurationIdDataType(Id="other"), timeout
        )
        assert error == Err.NOT_FOUND
        assert (
            await config.call_method(
                f"{ns.mv}:ActivateConfiguration", ua.ConfigurationIdDataType(Id="line1:tiny")
            )
            == 0
        )
        assert (
            await config.call_method(f"{ns.mv}:ActivateConfiguration", ua.ConfigurationIdDataType(Id="x"))
            == Err.NOT_FOUND
        )
