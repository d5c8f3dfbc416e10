"""Publisher kinds by `type:`: `type` -> (pydantic config model, class built as `Cls(config, context)`).

Plug-ins are imported lazily, when a site file uses them, so `edge-inspect --help` stays light and a
missing optional part (its module or its library) gives a clear error naming it, not a crash at import.

The config model of a publisher class is its `config_model` attribute when set, else the type hint of
the `config` parameter of its `__init__`.

Example:
    >>> from edge_agent.publishers.registry import publisher_types
    >>> "zmq" in publisher_types()
    True
"""

from __future__ import annotations

import importlib
import inspect
import typing

from pydantic import BaseModel

from edge_agent.publishers.base import Publisher, PublisherContext

#: type -> "module:Class" (Class may be omitted: the module's one Publisher subclass is used)
_BUILTIN: dict[str, str] = {
    "zmq": "edge_agent.publishers.zmq_pub:ZmqPublisher",
    "mes": "edge_agent.publishers.mes_delivery:MesDeliveryPublisher",
    "opcua": "edge_agent.publishers.opcua_publisher",
    "mqtt": "edge_agent.publishers.mqtt_pub:MqttPublisher",
}

_registered: dict[str, tuple[type[BaseModel], type[Publisher]]] = {}


class PublisherUnavailable(Exception):
    """A known publisher type whose code or library is not installed."""


def register_publisher(kind: str, config_model: type[BaseModel], cls: type[Publisher]) -> None:
    """Add (or replace) a publisher kind at run time, e.g. a site-specific output or a test double."""
    _registered[kind] = (config_model, cls)


def unregister_publisher(kind: str) -> None:
    _registered.pop(kind, None)


def publisher_types() -> list[str]:
    return sorted({*_BUILTIN, *_registered})


def _config_model_of(cls: type[Publisher]) -> type[BaseModel]:
    model = getattr(cls, "config_model", None)
    if model is None:
        hints = typing.get_type_hints(cls.__init__)
        model = hints.get("config")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PublisherUnavailable(f"{cls.__module__}.{cls.__name__}: cannot tell its config model")
    return model


def resolve_publisher(kind: str) -> tuple[type[BaseModel], type[Publisher]]:
    """The config model and class of publisher `kind`. KeyError: unknown kind; PublisherUnavailable:
    known but its module (or a library it needs) is not installed."""
    if kind in _registered:
        return _registered[kind]
    target = _BUILTIN[kind]  # KeyError for an unknown kind
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        why = "is not installed" if missing == module_name else f"needs {missing}, which is not installed"
        raise PublisherUnavailable(f"publisher type {kind!r} is not available: {module_name} {why}") from exc
    if class_name:
        cls = getattr(module, class_name, None)
    else:
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Publisher)
            and obj is not Publisher
            and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
        ]
        cls = found[0] if len(found) == 1 else None
    if cls is None:
        raise PublisherUnavailable(f"publisher type {kind!r}: {target} defines no usable Publisher class")
    entry = (_config_model_of(cls), cls)
    _registered[kind] = entry
    return entry


def available_publisher_models() -> dict[str, type[BaseModel]]:
    """Config models of every publisher kind that can be imported here (for the JSON Schema)."""
    out = {}
    for kind in publisher_types():
        try:
            out[kind] = resolve_publisher(kind)[0]
        except PublisherUnavailable:
            continue
    return out


def build_publisher(kind: str, config: BaseModel, context: PublisherContext) -> Publisher:
    _model, cls = resolve_publisher(kind)
    return cls(config, context)


__all__ = [
    "PublisherUnavailable",
    "available_publisher_models",
    "build_publisher",
    "publisher_types",
    "register_publisher",
    "resolve_publisher",
    "unregister_publisher",
]
