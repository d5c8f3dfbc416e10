"""Input argument checking of method calls, as OPC 10000-4 §5.11.2 says.

asyncua hands a method whatever Variants the client sent. `MethodSignature` is read once from a
method's `InputArguments` (the official declarations) and checks a call before the handler runs:

- fewer arguments than declared: `BadArgumentsMissing`
- more: `BadTooManyArguments`
- an argument of the wrong type or rank: `BadTypeMismatch`, with `InputArgumentResults` saying
  which (Good for the others)

A structure argument matches when its class encodes the declared DataType or one of its subtypes
(so a BinaryIdBaseDataType where a RecipeIdExternalDataType is declared does not).
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Server, ua
from asyncua.common.ua_utils import get_base_data_type, get_node_subtypes

_BASE_DATA_TYPE = ua.NodeId(ua.ObjectIds.BaseDataType)
_STRUCTURE = ua.ObjectIds.Structure
_ENUMERATION = ua.ObjectIds.Enumeration
_NUMBER_KINDS = {ua.ObjectIds.Number, ua.ObjectIds.Integer, ua.ObjectIds.UInteger}


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    data_type: ua.NodeId
    #: the builtin type a Variant must carry; None for BaseDataType (anything) and abstract numbers
    variant_type: ua.VariantType | None
    array: bool
    #: for structures: the declared DataType and its subtypes
    structures: frozenset[ua.NodeId]

    def matches(self, variant: ua.Variant) -> bool:
        value = variant.Value
        if self.array:
            if value is None:
                return variant.VariantType in (ua.VariantType.Null, self.variant_type or variant.VariantType)
            if not isinstance(value, list):
                return False
            items = value
        else:
            if isinstance(value, list) or variant.is_array:
                return False
            items = [value]
        if self.variant_type is None:
            return True
        if variant.VariantType != self.variant_type:
            return False
        if self.variant_type == ua.VariantType.ExtensionObject:
            return all(self._is_struct(item) for item in items)
        return True

    def _is_struct(self, value: object) -> bool:
        if value is None:
            return False
        data_type = ua.uatypes.datatype_by_extension_object.get(type(value))
        return data_type in self.structures


@dataclass(frozen=True)
class MethodSignature:
    name: str
    inputs: tuple[ArgumentSpec, ...]

    def check(self, args: list[ua.Variant]) -> ua.CallMethodResult | None:
        """None when `args` fit; else the CallMethodResult to answer with."""
        if len(args) < len(self.inputs):
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadArgumentsMissing))
        if len(args) > len(self.inputs):
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadTooManyArguments))
        results = [
            ua.StatusCode(ua.StatusCodes.Good if spec.matches(arg) else ua.StatusCodes.BadTypeMismatch)
            for spec, arg in zip(self.inputs, args, strict=True)
        ]
        if all(r.is_good() for r in results):
            return None
        return ua.CallMethodResult(
            StatusCode=ua.StatusCode(ua.StatusCodes.BadTypeMismatch), InputArgumentResults=results
        )


async def _argument_spec(server: Server, arg: ua.Argument, cache: dict[ua.NodeId, tuple]) -> ArgumentSpec:
    if arg.DataType not in cache:
        if arg.DataType == _BASE_DATA_TYPE:
            cache[arg.DataType] = (None, frozenset())
        else:
            node = server.get_node(arg.DataType)
            base = (await get_base_data_type(node)).nodeid.Identifier
            if base == _STRUCTURE:
                subtypes = await get_node_subtypes(node)
                cache[arg.DataType] = (ua.VariantType.ExtensionObject, frozenset(n.nodeid for n in subtypes))
            elif base == _ENUMERATION:
                cache[arg.DataType] = (ua.VariantType.Int32, frozenset())
            elif base in _NUMBER_KINDS:
                cache[arg.DataType] = (None, frozenset())
            else:
                cache[arg.DataType] = (ua.VariantType(base), frozenset())
    variant_type, structures = cache[arg.DataType]
    return ArgumentSpec(
        name=arg.Name,
        data_type=arg.DataType,
        variant_type=variant_type,
        array=arg.ValueRank >= 1 or arg.ValueRank == ua.ValueRank.OneOrMoreDimensions,
        structures=structures,
    )


async def read_signature(server: Server, method: ua.NodeId, cache: dict[ua.NodeId, tuple]) -> MethodSignature:
    """The signature declared by a method node's InputArguments (none: no inputs)."""
    node = server.get_node(method)
    name = (await node.read_browse_name()).Name
    inputs: list[ua.Argument] = []
    for prop in await node.get_properties():
        if (await prop.read_browse_name()).Name == "InputArguments":
            inputs = await prop.read_value() or []
    return MethodSignature(name, tuple([await _argument_spec(server, a, cache) for a in inputs]))
