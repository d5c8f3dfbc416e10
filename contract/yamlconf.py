"""YAML loading that remembers where every key came from, `${ENV}` substitution, and readable errors.

Integrators write YAML, never Python, so a mistake must point at the file, the line and the key path,
and a typo gets the nearest valid key:

    configs/lines/demo.yaml:14:7: cameras[0].source.globb: unknown key (did you mean 'glob'?)

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.yaml"
    >>> _ = p.write_text("site: plant-1\\njournal:\\n  path: ${EI_DOCTEST_DIR:-/tmp}/j.sqlite\\n")
    >>> doc = load_yaml(p)
    >>> doc.data["journal"]["path"], doc.line_of(("journal", "path"))
    ('/tmp/j.sqlite', 3)
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

KeyPath = tuple[str | int, ...]

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_path(path: Iterable[str | int]) -> str:
    """`("cameras", 0, "source")` -> `cameras[0].source`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one config file."""

    file: Path | None
    line: int | None
    column: int | None
    path: KeyPath
    message: str

    def __str__(self) -> str:
        where = str(self.file) if self.file else "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {format_path(self.path)}: {self.message}"


class ConfigError(Exception):
    """One or more problems in configuration files; `str()` lists them all, one per line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class YamlDocument:
    """Parsed YAML plus the (line, column) of every key path, 1-based."""

    file: Path
    data: Any
    marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        mark = self.mark_of(path)
        return mark[0] if mark else None

    def mark_of(self, path: KeyPath) -> tuple[int, int] | None:
        """Mark of `path`, or of its nearest ancestor that exists."""
        path = tuple(path)
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path)

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        mark = self.mark_of(path)
        line, column = mark if mark else (None, None)
        return ConfigIssue(self.file, line, column, tuple(path), message)


def _substitute_env(text: str, on_missing: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is not None:
                return default
            on_missing.append(name)
            return match.group(0)
        return value

    return _ENV_PATTERN.sub(replace, text)


#: deeper than this is never a config file, and would exhaust the recursion of the YAML composer
MAX_NESTING = 64
#: values built from one file at most: aliases of aliases ("billion laughs") must not eat the memory
MAX_VALUES = 200_000


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character `index` in `text`."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _read_text(path: Path) -> str:
    """The file as text; an unreadable, UTF-16 or non-UTF-8 file, or one with NUL bytes, is a ConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, None, None, (), f"cannot read: {exc.strerror or exc}")]) from exc
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError([ConfigIssue(path, None, None, (), "the file is UTF-16 text; save it as UTF-8")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        utf16 = raw.count(b"\x00") > len(raw) // 4  # ASCII text saved as UTF-16 without a BOM
        msg = (
            "the file looks like UTF-16 text; save it as UTF-8"
            if utf16
            else f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        )
        raise ConfigError([ConfigIssue(path, line, col, (), msg)]) from None
    nul = text.find("\x00")
    if nul >= 0:
        line, col = _position(text, nul)
        utf16 = text.count("\x00") > len(text) // 4
        msg = (
            "the file looks like UTF-16 text; save it as UTF-8"
            if utf16
            else "a NUL byte: this is not a text file (binary, or damaged on disk?)"
        )
        raise ConfigError([ConfigIssue(path, line, col, (), msg)])
    return text


def _yaml_issue(path: Path, text: str, exc: yaml.YAMLError) -> ConfigIssue:
    """A YAML parser/reader error as an issue with the file's line and column where it has one."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = exc.problem or str(exc)
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        return ConfigIssue(path, line, col, (), f"YAML syntax error: {problem}")
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids (control characters)
        line, col = _position(text, exc.position)
        return ConfigIssue(path, line, col, (), f"character {exc.character!r} is not allowed in YAML")
    return ConfigIssue(path, None, None, (), f"YAML error: {exc}")


def _check_nesting(path: Path, text: str) -> None:
    """Parse events (iterative, no recursion) and refuse nesting deeper than MAX_NESTING."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                mark = event.start_mark
                msg = f"nested more than {MAX_NESTING} levels deep; no setting is that deep"
                raise ConfigError([ConfigIssue(path, mark.line + 1, mark.column + 1, (), msg)])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


_COLLECTION_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def load_yaml(path: str | Path) -> YamlDocument:
    """Load a YAML file, keeping the line of every key; `${VAR}` / `${VAR:-default}` in strings are replaced
    from the environment. Raises `ConfigError` naming the file and line for syntax errors, duplicate keys,
    unset environment variables, unknown tags, bad values, bad encodings and absurd nesting: whatever the
    bytes in the file, the only exception that leaves is `ConfigError`."""
    path = Path(path)
    try:
        return _load_yaml(path)
    except ConfigError:
        raise
    except Exception as exc:  # the last guard: a config file must explain itself, never crash the caller
        raise ConfigError([ConfigIssue(path, None, None, (), f"cannot read this file: {exc!r}")]) from None


def _load_yaml(path: Path) -> YamlDocument:
    text = _read_text(path)
    try:
        _check_nesting(path, text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(path, text, exc)]) from None
    doc = YamlDocument(file=path, data=None)
    issues: list[ConfigIssue] = []
    if root is None:
        doc.data = {}
        return doc
    constructor = yaml.SafeLoader("")
    built = 0
    on_path: set[int] = set()  # nodes being built: an alias to an ancestor would recurse forever

    def construct(node: yaml.Node, key_path: KeyPath) -> tuple[bool, Any]:
        """(ok, value) of a scalar node; a tag or value YAML cannot construct becomes an issue."""
        try:
            return True, constructor.construct_object(node, deep=True)
        except Exception as exc:  # ConstructorError (unknown !tag), ValueError (bad !!timestamp, huge int)
            if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
                problem = exc.problem
            else:
                problem = str(exc).split("\n")[0]
            value = node.value if isinstance(node, yaml.ScalarNode) else ""
            what = f" in {node.tag} value {_short(str(value))!r}" if value else ""
            issues.append(
                ConfigIssue(
                    path,
                    node.start_mark.line + 1,
                    node.start_mark.column + 1,
                    key_path,
                    f"cannot read the value{what}: {_short(problem, 160)}",
                )
            )
            return False, None

    def build(node: yaml.Node, key_path: KeyPath) -> Any:
        nonlocal built
        built += 1
        if built > MAX_VALUES:
            raise ConfigError([doc.issue(key_path, f"more than {MAX_VALUES} values (aliases of aliases?)")])
        doc.marks.setdefault(key_path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if id(node) in on_path:
            issues.append(doc.issue(key_path, "an alias refers to a node that contains it (endless value)"))
            return None
        plain_tag = _COLLECTION_TAGS.get(type(node))
        if plain_tag is not None and node.tag != plain_tag:
            msg = f"unknown tag {node.tag!r}: config files use plain YAML mappings and lists"
            mark = node.start_mark
            issues.append(ConfigIssue(path, mark.line + 1, mark.column + 1, key_path, msg))
            return None
        if isinstance(node, yaml.MappingNode):
            try:
                constructor.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or node.start_mark
                msg = f"bad merge key `<<`: {exc.problem or exc}"
                issues.append(ConfigIssue(path, mark.line + 1, mark.column + 1, key_path, msg))
                return {}
            on_path.add(id(node))
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    issues.append(doc.issue(key_path, "keys must be plain values, not lists or mappings"))
                    continue
                ok, key = construct(key_node, key_path)
                if not ok:
                    continue
                if not isinstance(key, (str, int, float, bool)):
                    issues.append(doc.issue(key_path, f"keys must be plain values, got {type(key).__name__}"))
                    continue
                child = (*key_path, key)
                doc.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    issues.append(doc.issue(child, "duplicate key (the later one would silently win)"))
                out[key] = build(value_node, child)
            on_path.discard(id(node))
            return out
        if isinstance(node, yaml.SequenceNode):
            on_path.add(id(node))
            items = [build(item, (*key_path, i)) for i, item in enumerate(node.value)]
            on_path.discard(id(node))
            return items
        ok, value = construct(node, key_path)
        if ok and isinstance(value, str) and "${" in value:
            missing: list[str] = []
            value = _substitute_env(value, missing)
            for name in missing:
                issues.append(
                    doc.issue(
                        key_path,
                        f"environment variable ${{{name}}} is not set "
                        f"(set it, or give a default: ${{{name}:-value}})",
                    )
                )
        return value

    doc.data = build(root, ())
    if issues:
        raise ConfigError(issues)
    return doc


# -- pydantic errors -> issues with file, line, key path and a suggestion -----------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _field_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _tag_of(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("type")
    if f is None:
        return None
    args = typing.get_args(f.annotation)
    return str(args[0]) if typing.get_origin(f.annotation) is typing.Literal and args else None


def _models_at(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[type[BaseModel]], list[str]]:
    """Models that can sit at `loc` (pydantic's error location), and the valid `type:` tags there."""
    candidates: list[Any] = [root]
    for part in loc:
        nxt: list[Any] = []
        for cand in candidates:
            for t in _unwrap(cand):
                origin = typing.get_origin(t)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    if _tag_of(t) == part:  # discriminated unions put the tag in the location
                        nxt.append(t)
                    else:
                        for name, f in t.model_fields.items():
                            if part in (name, f.alias):
                                nxt.append(f.annotation)
                elif origin in (list, tuple) and isinstance(part, int):
                    nxt.extend(typing.get_args(t)[:1])
                elif origin is dict:
                    nxt.append(typing.get_args(t)[1])
        candidates = nxt
    models, tags = [], []
    for cand in candidates:
        for t in _unwrap(cand):
            if isinstance(t, type) and issubclass(t, BaseModel):
                models.append(t)
                tag = _tag_of(t)
                if tag:
                    tags.append(tag)
    return models, tags


def _data_path(data: Any, loc: tuple[Any, ...]) -> KeyPath:
    """Pydantic's location minus the union tags it inserts: the path as written in the YAML."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        if in_dict or (isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and cur.get("type") == part:
            continue  # discriminator tag
        else:
            out.append(part)
            cur = None
    return tuple(out)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The nearest valid choice for a typo, or None."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return matches[0] if matches else None


def issues_from_validation(
    exc: ValidationError, model: type[BaseModel], doc: YamlDocument, prefix: KeyPath = ()
) -> list[ConfigIssue]:
    """Turn a pydantic ValidationError on `doc.data` (at `prefix`) into issues with lines and suggestions."""
    sub = doc.data
    for part in prefix:
        sub = sub[part]
    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        path = prefix + _data_path(sub, loc)
        if kind == "extra_forbidden":
            models, _ = _models_at(model, loc[:-1])
            valid = sorted({k for m in models for k in _field_keys(m)})
            hint = suggest(str(loc[-1]), valid)
            msg = "unknown key" + (f" (did you mean {hint!r}?)" if hint else f"; valid: {', '.join(valid)}")
        elif kind == "missing":
            msg = "required key is missing"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            _, tags = _models_at(model, loc)
            given = err.get("ctx", {}).get("tag", "")
            hint = suggest(str(given), tags) if given else None
            if kind == "union_tag_not_found":
                msg = f"needs a `type:`, one of: {', '.join(tags)}"
                path = (*path, "type")
            else:
                msg = f"unknown type {given!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                msg += f"; valid types: {', '.join(tags)}"
                path = (*path, "type")
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                # never echo secrets into logs and terminals
                secret = any(w in str(part).lower() for part in path for w in _SECRET_WORDS)
                msg += " (value hidden)" if secret else f" (got {_short(_safe_repr(err['input']), 80)})"
        issues.append(doc.issue(path, msg))
    return issues


_SECRET_WORDS = ("password", "secret", "token", "key")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:  # an int too long for Python's str conversion limit
        return f"<{type(value).__name__} too long to show>"


def validate(model: type[BaseModel], doc: YamlDocument, prefix: KeyPath = (), data: Any = None) -> Any:
    """Validate `doc.data` (or `data`, found at `prefix` in the document) against `model`."""
    if data is None:
        data = doc.data
        for part in prefix:
            data = data[part]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, model, doc, prefix)) from None


__all__ = [
    "ConfigError",
    "ConfigIssue",
    "KeyPath",
    "YamlDocument",
    "format_path",
    "issues_from_validation",
    "load_yaml",
    "suggest",
    "validate",
]


def absolute_path(base: Path, p: Path | None) -> Path | None:
    """`p` (with `~` expanded) made absolute relative to `base`; None stays None."""
    if p is None:
        return None
    p = Path(p).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def resolve_model_paths(model: BaseModel, base: Path) -> BaseModel:
    """Every `Path` field of a (nested) config model made absolute, relative to `base`.

    Config files name files relative to themselves (a line's model and images, the site's journal, a
    plug-in's CURVE keys or certificates); once resolved they mean the same file whatever the agent's
    working directory.
    """

    def resolve(value: Any) -> Any:
        if isinstance(value, Path):
            return absolute_path(base, value)
        if isinstance(value, BaseModel):
            return resolve_model_paths(value, base)
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        resolved = resolve(value)
        if resolved is not value:
            updates[name] = resolved
    return model.model_copy(update=updates) if updates else model
