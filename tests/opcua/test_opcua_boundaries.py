"""Who may import whom: `opcua` and `contract` never import `edge_agent` (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


def test_opcua_and_contract_never_import_the_agent():
    for package, allowed_first_party in (("opcua", {"opcua", "contract"}), ("contract", {"contract"})):
        for path, names in _imports(package).items():
            first_party = names & {"edge_agent", "vision", "training", "opcua", "contract", "hub"}
            assert first_party <= allowed_first_party, f"{path} imports {first_party - allowed_first_party}"


def test_the_agent_reads_the_contract_through_one_module():
    from contract import InspectionResult
    from contract.result import InspectionResult as AgentResult

    assert AgentResult is InspectionResult
