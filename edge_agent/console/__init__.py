"""The line console: a web page served by the agent itself (docs/console.md).

`settings` (the site-file section) imports no web library; `server.ConsoleServer` brings in Starlette,
uvicorn and Jinja2 only when a console is enabled.
"""
