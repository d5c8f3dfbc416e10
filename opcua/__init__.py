"""OPC UA server of edge-inspect: each inspection line as an OPC 40100-1 (Machine Vision) VisionSystem.

- `opcua.config`: pydantic config (`OpcUaServerConfig`), password hashing
- `opcua.backend`: the protocols the server serves (`LineBackend`, `ResultStore`); no agent imports
- `opcua.model`: the information model built in code, and result body -> `ResultDataType`
- `opcua.server`: `VisionServer` (asyncio) and `ServerThread` (its own thread and loop)
- `opcua.security`: certificates, trust folder, users and roles
- `opcua.cli`: `edge-inspect opcua ...`

See docs/opcua.md. Importing `opcua` itself is light; asyncua is imported by the modules that need it.
"""
