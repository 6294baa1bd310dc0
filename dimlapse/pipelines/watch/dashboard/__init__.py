"""A local web dashboard for ``watch``: one static page polling a JSON endpoint.

The server binds 127.0.0.1 only and serves two things: ``/`` (``index.html``, which draws
its charts as inline SVG with no external scripts, so it works offline) and
``/state.json`` (the monitor's latest state). It runs on a daemon thread; the watcher calls
:meth:`Dashboard.publish` after every poll.

Binding to loopback is not enough on its own: a web page on another site can point a DNS
name of its own at 127.0.0.1 (DNS rebinding) and read ``/state.json`` from the user's
browser. So a request is answered only when its ``Host`` header names this server as the
browser reached it (``127.0.0.1``, ``localhost`` or ``[::1]``, with the port); anything
else gets 421 and no data. The page writes every store-provided string (run path, layer
names, alert messages) as text, never as markup.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

__all__ = ["Dashboard"]

_EMPTY = {"status": "waiting", "layers": [], "alerts": [], "steps": [], "snapshots": 0}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        host = self.headers.get("Host", "")
        if host.lower() not in self.server.hosts:
            self._send(
                421,
                "text/plain; charset=utf-8",
                f"Host {host!r} is not this dashboard; open http://{self.server.hosts[0]}/".encode(),
            )
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/state.json":
            self._send(200, "application/json", self.server.state_bytes())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one request per second per open page: keep the terminal quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.page = resources.files(__package__).joinpath("index.html").read_bytes()
        self._lock = threading.Lock()
        self._state = json.dumps(_EMPTY).encode()
        port = self.server_address[1]
        # what a browser sends as Host for this server (port 80 may be left out)
        names = ("127.0.0.1", "localhost", "[::1]")
        self.hosts = [f"{n}:{port}" for n in names] + (list(names) if port == 80 else [])

    def state_bytes(self) -> bytes:
        with self._lock:
            return self._state

    def set_state(self, body: bytes) -> None:
        with self._lock:
            self._state = body


class Dashboard:
    """Serve the dashboard on ``http://127.0.0.1:<port>/`` until :meth:`close`.

    Parameters
    ----------
    port : int
        TCP port on 127.0.0.1; 0 picks a free one (see :attr:`url`).
    """

    def __init__(self, *, port: int = 8765) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"Expected `port` to be an int in 0..65535 (0: any free), got {port!r}"
            )
        try:
            self._server = _Server(port)
        except OSError as e:
            raise OSError(
                f"Cannot serve the dashboard on 127.0.0.1:{port} ({e.strerror}); pass another "
                "--port, or 0 for any free port"
            ) from e
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dimlapse-dashboard", daemon=True
        )
        self._thread.start()

    def publish(self, state: dict[str, Any]) -> None:
        """Make ``state`` (``Monitor.state()``, JSON-ready) what ``/state.json`` returns."""
        self._server.set_state(json.dumps(state, allow_nan=False).encode())

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
