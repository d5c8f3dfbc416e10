"""Config files that are broken in every way trials found: each gives `file:line:col` (or `file:`), never a
traceback. A fixed corpus of the nasty cases plus seeded byte- and token-level mutants of a real line file."""

from __future__ import annotations

import codecs
import random
from pathlib import Path

import pytest
from agent_helpers import write_site
from typer.testing import CliRunner

from contract.yamlconf import ConfigError, load_yaml
from edge_agent.cli import app
from edge_agent.config import load_line

REPO = Path(__file__).resolve().parents[2]
LINE_TEXT = (REPO / "configs" / "lines" / "demo.yaml").read_text()

#: name -> file content (bytes): each once gave a traceback from `edge-inspect config check`
NASTY: dict[str, bytes] = {
    "unknown_tag": b"name: a\ncameras: !camera [1]\nmodel: {path: m.onnx}\n",
    "unknown_tag_scalar": b"name: a\nmodel: {path: !!python/object:os.system ls}\n",
    "bad_merge_key": b"name: a\nbase: &b 3\nmodel:\n  <<: *b\n  path: m.onnx\n",
    "bad_merge_list": b"name: a\nmodel:\n  <<: [1, 2]\n  path: m.onnx\n",
    "bad_timestamp": b"name: a\nstarted: !!timestamp 2026-13-45\nmodel: {path: m.onnx}\n",
    "huge_int": b"name: a\nresult_queue: " + b"9" * 5000 + b"\nmodel: {path: m.onnx}\n",
    "huge_int_key": b"name: a\n" + b"7" * 5000 + b": 1\n",
    "non_utf8": "name: caméra\n".encode("latin-1") + b"model: {path: m.onnx}\n",
    "utf16_bom": codecs.BOM_UTF16_LE + LINE_TEXT.encode("utf-16-le"),
    "utf16_no_bom": LINE_TEXT.encode("utf-16-le"),
    "random_bytes": bytes(random.Random(7).randrange(256) for _ in range(4000)),
    "nul_bytes": LINE_TEXT.encode()[:200] + b"\x00\x00\x00" + LINE_TEXT.encode()[200:],
    "deep_nesting_flow": b"name: a\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep_nesting_block": b"name: a\n" + b"".join(b"  " * i + b"k:\n" for i in range(400)),
    "control_char": b"name: a\x07b\nmodel: {path: m.onnx}\n",
    "recursive_alias": b"name: a\nx: &a [1, *a]\n",
    "billion_laughs": b"a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(7)
    ),
    "complex_key": b"? [1, 2]\n: 3\nname: a\n",
    "empty_file": b"",
    "only_comment": b"# nothing\n",
    "a_list": b"- 1\n- 2\n",
    "tabs": b"name: a\n\tmodel: x\n",
    "unterminated": b"name: 'a\nmodel: {path: m.onnx\n",
    "duplicate_anchor_keys": b"name: a\nmodel: {path: m.onnx, path: n.onnx}\n",
}


def assert_explains(exc: ConfigError, file: Path) -> None:
    assert exc.issues, "a ConfigError with no issue explains nothing"
    for issue in exc.issues:
        assert issue.file == file
        text = str(issue)
        assert text.startswith(f"{file}:"), text
        assert "Traceback" not in text


@pytest.mark.parametrize("case", sorted(NASTY))
def test_nasty_line_file_gives_a_positioned_message(tmp_path: Path, case: str) -> None:
    path = tmp_path / "line.yaml"
    path.write_bytes(NASTY[case])
    try:
        load_line(path)
    except ConfigError as exc:
        assert_explains(exc, path.resolve())
    # anything else escaping (RecursionError, ValueError, UnicodeDecodeError, ...) fails the test


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_tag", ":2:10: cameras: unknown tag '!camera'"),
        ("bad_merge_key", ":2:7: model: bad merge key `<<`: expected a mapping"),
        ("bad_timestamp", ":2:10: started: cannot read the value in tag:yaml.org,2002:timestamp"),
        ("huge_int", ":2:15: result_queue: cannot read the value"),
        ("non_utf8", ":1:10: <top level>: not UTF-8 text (byte 0xe9)"),
        ("utf16_bom", ": <top level>: the file is UTF-16 text; save it as UTF-8"),
        ("utf16_no_bom", "the file looks like UTF-16 text; save it as UTF-8"),
        ("nul_bytes", "a NUL byte: this is not a text file"),
        ("deep_nesting_flow", ":2:67: <top level>: nested more than 64 levels deep"),
        ("recursive_alias", "x[1]: an alias refers to a node that contains it"),
        ("billion_laughs", "values (aliases of aliases?)"),
    ],
)
def test_messages_say_where_and_what(tmp_path: Path, case: str, expected: str) -> None:
    path = tmp_path / "line.yaml"
    path.write_bytes(NASTY[case])
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    assert expected in str(exc.value), str(exc.value)


def _mutants(seed: int, count: int) -> list[bytes]:
    """Byte flips, deletions, duplications, truncations and nasty tokens dropped into the demo line."""
    rng = random.Random(seed)
    base = LINE_TEXT.encode()
    tokens = [
        b"!tag ",
        b"<<: *x\n",
        b"&x ",
        b"*x",
        b"!!timestamp x",
        b"\x00",
        b"\xff\xfe",
        b"[" * 80,
        b"{",
        b"? ",
        b"- ",
        b"\t",
        b"9" * 4400,
        b"!!binary zz",
        b"!!float abc",
        b"%YAML 9.9\n",
        b"---\n",
        b": ",
    ]
    out = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                del data[pos : pos + rng.randint(1, 30)]
            elif op == 2:
                data[pos:pos] = rng.choice(tokens)
            elif op == 3:
                start = rng.randrange(len(data) + 1)
                data[pos:pos] = data[start : start + rng.randint(1, 60)]
            else:
                del data[pos:]
        out.append(bytes(data))
    return out


def test_mutated_line_files_never_escape_as_a_traceback(tmp_path: Path) -> None:
    path = (tmp_path / "line.yaml").resolve()
    (tmp_path / "images").mkdir()
    explained = 0
    for i, data in enumerate(_mutants(seed=13, count=300)):
        path.write_bytes(data)
        try:
            load_line(path)
        except ConfigError as exc:
            assert_explains(exc, path)
            explained += 1
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"mutant {i} escaped as {exc!r}:\n{data[:400]!r}") from exc
    assert explained > 150  # most mutants are broken; the test must not pass by loading none of them


@pytest.mark.parametrize("case", ["unknown_tag", "huge_int", "utf16_bom", "nul_bytes", "deep_nesting_flow"])
def test_config_check_cli_prints_the_message_and_exits_1(tmp_path: Path, case: str) -> None:
    site = write_site(tmp_path, [])
    line = tmp_path / "lines" / "broken.yaml"
    line.parent.mkdir(parents=True, exist_ok=True)
    line.write_bytes(NASTY[case])
    result = CliRunner().invoke(app, ["config", "check", str(site)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert f"{line.resolve()}:" in result.output


def test_hot_reload_of_a_nul_byte_file_is_logged_once_and_the_line_keeps_running(
    tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path, agent_factory, caplog
) -> None:
    import logging

    from agent_helpers import folder_line, wait_until

    line = folder_line("l1", synthetic_images, tiny_detect_onnx, trigger={"type": "free_run", "max_fps": 40})
    line["cameras"][0]["source"]["mode"] = "loop"
    site = write_site(tmp_path, [line], reload={"enabled": True, "poll_s": 0.05})
    agent = agent_factory(site)
    agent.start()
    runtime = agent.lines["l1"]
    wait_until(lambda: runtime.counts["inspected"] >= 2)
    line_file = tmp_path / "lines" / "l1.yaml"
    with caplog.at_level(logging.ERROR, logger="edge_agent.agent"):
        line_file.write_bytes(line_file.read_bytes()[:40] + b"\x00\x00" + line_file.read_bytes()[40:])
        wait_until(lambda: agent.reload_log)
        before = runtime.counts["inspected"]
        wait_until(lambda: runtime.counts["inspected"] >= before + 10)  # 10+ polls later: still once
    rejected = [r for r in caplog.records if "reload rejected" in r.getMessage()]
    assert len(rejected) == 1 and rejected[0].exc_info is None
    assert f"{line_file}:5:1:" in rejected[0].getMessage() and "a NUL byte" in rejected[0].getMessage()
    assert runtime.state == "running" and len(agent.reload_log) == 1
