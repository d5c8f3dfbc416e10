"""Config files: errors name file, line and key path; typos get the nearest valid key; `${ENV}`; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import folder_line, write_site, write_yaml
from typer.testing import CliRunner

from contract.yamlconf import ConfigError
from edge_agent.cli import app
from edge_agent.config import load_agent_config, load_line

REPO = Path(__file__).resolve().parents[2]


def issues_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(i) for i in exc.value.issues]


def test_typo_names_file_line_key_path_and_nearest_key(tmp_path: Path) -> None:
    line = tmp_path / "l1.yaml"
    line.write_text(
        "cameras:\n"
        "  - name: top\n"
        "    source:\n"
        "      type: folder\n"
        "      path: imgs\n"
        "      globb: '*.png'\n"
        "model: {path: m.onnx}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_line(line)
    (issue,) = exc.value.issues
    assert issue.file == line.resolve() and issue.line == 6
    assert str(issue) == f"{line.resolve()}:6:7: cameras[0].source.globb: unknown key (did you mean 'glob'?)"


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    line = tmp_path / "l1.yaml"
    line.write_text(
        "cameras:\n"
        "  - name: top\n"
        "    source: {type: foldr, path: imgs}\n"
        "trigger: {type: free_run, max_fsp: 3}\n"
        "model: {path: m.onnx, conf: 1.5}\n"
        "recipes:\n"
        "  a: {min_confidence: 0.3, clases: {}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_line(line)
    text = "\n".join(issues_of(exc))
    assert ":3:" in text and "cameras[0].source.type: unknown type 'foldr' (did you mean 'folder'?)" in text
    assert ":4:" in text and "trigger.max_fsp: unknown key (did you mean 'max_fps'?)" in text
    assert ":5:" in text and "model.conf: Input should be less than or equal to 1 (got 1.5)" in text
    assert ":7:" in text and "recipes.a.clases: unknown key (did you mean 'classes'?)" in text
    assert len(exc.value.issues) == 4


def test_unknown_active_recipe_suggests_a_recipe(tmp_path: Path) -> None:
    line = folder_line("a", tmp_path, tmp_path / "m.onnx", recipes={"standard": {}, "strict": {}})
    line["active_recipe"] = "standrd"
    with pytest.raises(ConfigError) as exc:
        load_line(write_yaml(tmp_path / "a.yaml", line))
    (text,) = issues_of(exc)
    assert "active_recipe: Value error, 'standrd' is not one of the recipes (standard, strict)" in text
    assert "did you mean 'standard'?" in text


def test_missing_required_key_points_at_parent(tmp_path: Path) -> None:
    line = write_yaml(tmp_path / "l.yaml", {"cameras": [{"name": "top", "source": {"type": "folder"}}]})
    with pytest.raises(ConfigError) as exc:
        load_line(line)
    text = "\n".join(issues_of(exc))
    assert "cameras[0].source.path: required key is missing" in text
    assert "model: required key is missing" in text


def test_env_substitution_and_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = tmp_path / "l.yaml"
    line.write_text(
        "cameras:\n"
        "  - name: cam\n"
        "    source: {type: camera, device: 'rtsp://${EI_USER}:${EI_PASS}@10.0.0.5/s1'}\n"
        "model: {path: '${EI_MODELS:-/opt/models}/m.onnx'}\n"
    )
    monkeypatch.setenv("EI_USER", "viewer")
    monkeypatch.setenv("EI_PASS", "s3cret")
    loaded = load_line(line)
    assert loaded.config.cameras[0].source.device == "rtsp://viewer:s3cret@10.0.0.5/s1"
    assert loaded.config.model.path == Path("/opt/models/m.onnx")
    monkeypatch.delenv("EI_PASS")
    with pytest.raises(ConfigError) as exc:
        load_line(line)
    assert issues_of(exc) == [
        f"{line.resolve()}:3:28: cameras[0].source.device: environment variable ${{EI_PASS}} is not set "
        "(set it, or give a default: ${EI_PASS:-value})"
    ]


def test_duplicate_keys_and_yaml_syntax_errors(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:2:1: name: duplicate key"):
        load_line(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [\n  - oops: {\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: <top level>: YAML syntax error"):
        load_line(bad)


def test_relative_paths_resolve_against_the_line_file(tmp_path: Path) -> None:
    loaded = load_line(
        write_yaml(tmp_path / "lines" / "x.yaml", folder_line("x", Path("../imgs"), Path("m.onnx")))
    )
    assert loaded.config.cameras[0].source.path == (tmp_path / "imgs").resolve()
    assert loaded.config.model.path == (tmp_path / "lines" / "m.onnx").resolve()


def test_site_file_errors_include_line_files_and_publishers(tmp_path: Path) -> None:
    write_site(
        tmp_path,
        [folder_line("a", tmp_path, tmp_path / "m.onnx", trigger={"type": "triggerd"})],
        publishers=[
            {"type": "zmqq"},
            {"type": "zmq", "pub_endpont": "tcp://127.0.0.1:*", "security": "plain"},
        ],
        metrics={"port": 70000},
    )
    with pytest.raises(ConfigError) as exc:
        load_agent_config(tmp_path)
    text = "\n".join(issues_of(exc))
    assert "agent.yaml" in text and "metrics.port: Input should be less than or equal to 65535" in text
    with pytest.raises(ConfigError) as exc:
        load_agent_config(
            write_site(
                tmp_path,
                [folder_line("a", tmp_path, tmp_path / "m.onnx")],
                publishers=[{"type": "zmqq"}, {"type": "zmq", "pub_endpont": "x", "security": "plain"}],
            )
        )
    text = "\n".join(issues_of(exc))
    assert "publishers[0].type: unknown publisher type 'zmqq' (did you mean 'zmq'?)" in text
    assert "publishers[1].pub_endpont: unknown key (did you mean 'pub_endpoint'?)" in text


def test_missing_line_file_and_duplicate_line_names(tmp_path: Path) -> None:
    write_yaml(tmp_path / "agent.yaml", {"site": "s", "lines": ["lines/nope.yaml"]})
    with pytest.raises(
        ConfigError, match=r"agent.yaml:3:\d+: lines\[0\]: line file .*nope.yaml does not exist"
    ):
        load_agent_config(tmp_path / "agent.yaml")
    write_yaml(tmp_path / "lines" / "one.yaml", folder_line("same", tmp_path, tmp_path / "m.onnx"))
    write_yaml(tmp_path / "lines" / "two.yaml", folder_line("same", tmp_path, tmp_path / "m.onnx"))
    write_yaml(tmp_path / "agent.yaml", {"site": "s", "lines": ["lines/*.yaml"]})
    with pytest.raises(ConfigError, match="line name 'same' is also used by"):
        load_agent_config(tmp_path)


def test_shipped_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_USER", "u")
    monkeypatch.setenv("CAM_PASSWORD", "p")
    cfg = load_agent_config(REPO / "configs" / "agent.yaml")
    assert [line.config.name for line in cfg.lines] == ["demo"]
    assert {p.type for p in cfg.publishers} >= {"zmq"}
    for name in ("usb-camera", "rtsp-camera", "triggered-plc", "gige-camera"):
        assert load_line(REPO / "configs" / "lines" / f"{name}.yaml").config.cameras


def test_cli_config_check_reports_errors_and_model_classes(tmp_path: Path, tiny_detect_onnx: Path) -> None:
    runner = CliRunner()
    site = write_site(
        tmp_path,
        [
            folder_line(
                "a", tmp_path, tiny_detect_onnx, recipes={"r": {"classes": {"scrach": {"max_count": 1}}}}
            )
        ],
    )
    result = runner.invoke(app, ["config", "check", str(site)])
    assert result.exit_code == 1
    assert "recipes.r.classes.scrach: 'scrach' is not a class of" in result.output
    assert "(did you mean 'scratch'?)" in result.output
    assert f"{(tmp_path / 'lines' / 'a.yaml').resolve()}:" in result.output

    write_site(tmp_path, [folder_line("a", tmp_path, tiny_detect_onnx)])
    result = runner.invoke(app, ["config", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output and "line a [free_run]" in result.output

    write_site(tmp_path, [folder_line("a", tmp_path, tmp_path / "missing.onnx")])
    result = runner.invoke(app, ["config", "check", str(tmp_path)])
    assert result.exit_code == 1 and "model.path: " in result.output and "no such model file" in result.output


def test_cli_config_schema_lists_sources_and_publishers() -> None:
    runner = CliRunner()
    line = json.loads(runner.invoke(app, ["config", "schema", "line"]).output)
    site = json.loads(runner.invoke(app, ["config", "schema", "site"]).output)
    assert {"folder", "video", "camera", "genicam"} <= {
        d["properties"]["type"]["const"] for n, d in line["$defs"].items() if n.endswith("SourceConfig")
    }
    titles = {item["title"] for item in site["properties"]["publishers"]["items"]["oneOf"]}
    assert "zmq publisher" in titles


def test_committed_line_schema_is_current() -> None:
    out = CliRunner().invoke(app, ["config", "schema", "line"])
    committed = json.loads((REPO / "schemas" / "agent-line.schema.json").read_text())
    assert json.loads(out.stdout) == committed, "regenerate: edge-inspect config schema line > schemas/..."


def test_publisher_whose_module_is_missing_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.publishers import registry

    monkeypatch.setitem(registry._BUILTIN, "ghost", "edge_agent.publishers.ghost_publisher")
    site = write_site(
        tmp_path, [folder_line("a", tmp_path, tmp_path / "m.onnx")], publishers=[{"type": "ghost"}]
    )
    with pytest.raises(ConfigError) as exc:
        load_agent_config(site)
    (text,) = issues_of(exc)
    assert text.endswith(
        "agent.yaml:16:3: publishers[0].type: publisher type 'ghost' is not available: "
        "edge_agent.publishers.ghost_publisher is not installed"
    )


def test_publisher_file_paths_are_relative_to_the_site_file(tmp_path: Path, monkeypatch) -> None:
    site = write_site(
        tmp_path,
        [folder_line("a", tmp_path, tmp_path / "m.onnx")],
        publishers=[
            {
                "type": "zmq",
                "pub_endpoint": "tcp://127.0.0.1:*",
                "router_endpoint": "tcp://127.0.0.1:*",
                "security": "curve",
                "curve": {"secret_key_file": "keys/agent.key_secret", "authorized_keys_dir": "keys/clients"},
            }
        ],
    )
    monkeypatch.chdir("/")  # the agent's working directory must not matter
    config = load_agent_config(site)
    curve = config.publishers[0].config.curve
    assert curve.secret_key_file == tmp_path / "keys" / "agent.key_secret"
    assert curve.authorized_keys_dir == tmp_path / "keys" / "clients"


def test_config_errors_never_echo_a_password(tmp_path: Path) -> None:
    site = write_site(
        tmp_path,
        [folder_line("a", tmp_path, tmp_path / "m.onnx")],
        publishers=[
            {
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:0/x",
                "security": "production",
                "users": [{"name": "mes", "role": "operator", "password_hash": "hunter2"}],
            }
        ],
    )
    with pytest.raises(ConfigError) as exc:
        load_agent_config(site)
    text = "\n".join(issues_of(exc))
    assert "password_hash" in text and "(value hidden)" in text
    assert "hunter2" not in text
