"""Another site for the web-security tests in a real browser: a small HTTP server on 127.0.0.1 that
serves the page `page(path)` builds for each GET. The browser opens it as `http://localhost:<port>`, a
host name other than the apps' 127.0.0.1, so it is another origin and another site (SameSite cookies
stay home, `Origin` names it).

Example:
    >>> import urllib.request
    >>> server, url = serve_page(lambda path: f"<p>you asked for {path}</p>")
    >>> urllib.request.urlopen(url + "/x").read()
    b'<p>you asked for /x</p>'
    >>> server.shutdown()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_page(page: Callable[[str], str]) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a free port; returns it (the caller shuts it down) and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page(self.path).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_address[1]}"


def forged(token: str) -> str:
    """`token` with its first character changed: a wrong token of the right shape. (Putting an "x" in front
    of `token[1:]` gave the right token back whenever it began with "x": a 1-in-64 flake.)"""
    return ("y" if token[0] == "x" else "x") + token[1:]
