"""`--web HOST:PORT`: one page for a phone on the stage network (livegen/web/index.html):
what plays, the latency figures, preset and panic buttons, sliders for the live settings,
and a piano roll of the last seconds fed by server-sent events.

Served by aiohttp (the `web` extra) on a thread and event loop of its own; every request
goes through `control.Requests`, like the ZeroMQ socket's. Loopback by default; on any other
address only with a secret token, checked on every request and on the live stream."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
from pathlib import Path

from livegen.config import CONTROLS
from livegen.endpoints import loopback, parse_address
from livegen.errors import ConfigError

log = logging.getLogger("livegen")

PAGE = Path(__file__).parent / "web" / "index.html"
EVENTS_EVERY_S = 0.1        # the roll's stream sends what was played and sent since, this often
STATUS_EVERY_S = 1.0


def make_token(folder: str | Path) -> Path:
    """The control page's secret for an address beyond loopback (`livegen keys` writes it)."""
    path = Path(folder) / "web.token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path


def read_token(web_token: str, keys: str) -> str:
    """The token from --web-token FILE, else from --keys DIR/web.token; "" when there is none."""
    path = Path(web_token) if web_token else Path(keys) / "web.token" if keys else None
    if path is None or (not web_token and not path.exists()):
        return ""
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the control page's token ({err.strerror})") from err
    if len(token) < 16:
        raise ConfigError(f"{path}: the token must be at least 16 characters (`livegen keys DIR` makes one)")
    return token


class WebPage(threading.Thread):
    def __init__(self, engine, requests, address: str, token: str = ""):
        super().__init__(name="livegen-web", daemon=True)
        try:
            from aiohttp import web
        except ImportError:
            raise ConfigError("--web needs aiohttp, which is not installed: pip install 'livegen[web]'") from None
        self.engine, self.requests, self.token = engine, requests, token
        self.host, self.port = parse_address(address)
        if not token and not loopback(f"tcp://{self.host}:{self.port}"):
            raise ConfigError(f"web {address}: a page beyond loopback needs a token: `livegen keys DIR` makes "
                              "one (DIR/web.token, with --keys DIR), or --web-token FILE")
        self.loop = asyncio.new_event_loop()
        self.streams: set = set()       # the tasks of the open event streams
        @web.middleware
        async def guard(request, handler):
            return await self._guard(request, handler)

        app = web.Application(middlewares=[guard])
        app.add_routes([web.get("/", self._page), web.get("/api/status", self._status),
                        web.post("/api/request", self._request), web.get("/api/events", self._events)])
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        try:      # bound here, so that a port in use is an error at start-up
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, self.host, self.port).start())
        except OSError as err:
            self.loop.run_until_complete(self.runner.cleanup())
            raise ConfigError(f"web {address}: cannot listen there ({err.strerror})") from err
        self.url = f"http://{self.host}:{self.port}/" + (f"?token={token}" if token else "")

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def close(self) -> None:
        """Ends the open streams (a page left open on a phone), then the server."""
        if self.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(2.0)
            except Exception as err:      # (the process is ending: say so, go on)
                log.warning("control page: closing: %s", err)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.join(2.0)
        elif not self.loop.is_closed():
            self.loop.run_until_complete(self._shutdown())
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    async def _shutdown(self) -> None:
        for task in list(self.streams):
            task.cancel()
        await self.runner.cleanup()

    # ---------------------------------------------------------------- on the page's loop

    async def _guard(self, request, handler):
        from aiohttp import web

        if self.token:
            given = request.query.get("token") or request.headers.get("X-Livegen-Token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(status=401, text="livegen: this page needs its token: open the address "
                                    "livegen printed at start-up (http://HOST:PORT/?token=...), the token being "
                                    "the one in the web.token file of --keys DIR (or --web-token FILE)\n")
        return await handler(request)

    async def _page(self, request):
        from aiohttp import web

        return web.Response(body=PAGE.read_bytes(), content_type="text/html", headers={"Cache-Control": "no-store"})

    def status(self) -> dict:
        """What the page shows: the daemon's status, the sliders' ranges, the latency figures."""
        e = self.engine
        st = e.status()
        late = sorted(e.scheduler.late.recent)      # (the last 256 notes)
        st["latency"] = {"inference_ms": st.get("last_inference_ms"),
                         "note_late_p50_ms": round(late[len(late) // 2], 2) if late else None,
                         "note_late_max_ms": round(late[-1], 2) if late else None}
        st["controls"] = {k: [c.low, c.high, c.kind.__name__] for k, c in CONTROLS.items() if k not in ("mute", "seed", "key")}
        st["tracks_all"] = list(e.tracks)
        return st

    async def _status(self, request):
        from aiohttp import web

        return web.json_response({"ok": True, "status": await self.loop.run_in_executor(None, self.status)})

    async def _request(self, request):
        from aiohttp import web

        raw = await request.read()
        # (a model switch can take seconds: not on the page's loop)
        reply = await self.loop.run_in_executor(None, self.requests.handle, raw)
        return web.json_response(reply)

    async def _events(self, request):
        """Server-sent events: `notes` (played and sent since the last, times relative to now)
        every EVENTS_EVERY_S, `status` every STATUS_EVERY_S."""
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        e, seen, since_status = self.engine, -1, STATUS_EVERY_S
        task = asyncio.current_task()
        self.streams.add(task)
        try:
            while True:
                now, kept = e.now(), list(e.monitor)
                notes = [[round(t - now, 4), who, msg[0], msg[1], msg[2]] for n, t, who, msg in kept if n > seen]
                if notes:
                    seen = kept[-1][0]
                    await response.write(f"event: notes\ndata: {json.dumps(notes)}\n\n".encode())
                since_status += EVENTS_EVERY_S
                if since_status >= STATUS_EVERY_S:
                    since_status = 0.0
                    st = await self.loop.run_in_executor(None, self.status)
                    await response.write(f"event: status\ndata: {json.dumps(st)}\n\n".encode())
                await asyncio.sleep(EVENTS_EVERY_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(task)
        return response
