"""The web console: server-rendered pages (jinja2) over the same operations as the admin API.

Pages read through :class:`~inflow.console.operations.Operations`; every change a page offers is a call
to the admin API made by ``static/console.js`` (so it is authorised and audited in one place), and live
figures (the overview chart, delivery counts) are polled from the API every few seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from inflow.console.api import Console
from inflow.console.tokens import AdminToken
from inflow.errors import InflowError

HERE = Path(__file__).resolve().parent
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
NAV = [("/", "Overview"), ("/imports", "Imports"), ("/streams", "Streams"), ("/workspaces", "Workspaces")]
NAV += [("/topics", "Topics"), ("/audit", "Audit")]


def render(name: str, **context: Any) -> web.Response:
    text = ENV.get_template(name).render(nav=NAV, **context)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _logged_in(request: web.Request, c: Console) -> AdminToken:
    token = c.sessions.token_of(request, c.tokens)
    if token is None:
        raise web.HTTPSeeOther("/login")
    return token


async def _gather(**calls: Any) -> dict[str, Any]:
    """Run the page's reads on threads; a read that fails shows its reason instead of its table."""
    names = list(calls)
    results = await asyncio.gather(*(asyncio.to_thread(*calls[n]) for n in names), return_exceptions=True)
    out: dict[str, Any] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, InflowError):
            out[name], out[f"{name}_problem"] = None, str(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            out[name], out[f"{name}_problem"] = result, None
    return out


def routes(c: Console) -> list[web.AbstractRouteDef]:
    async def login_page(request: web.Request) -> web.Response:
        return render("login.html", error=None, me=None, path="/login")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        text = str(form.get("token", "")).strip()
        token = c.tokens.verify(text) if text else None
        if token is None:
            response = render("login.html", error="Unknown or revoked admin token.", me=None, path="/login")
            response.set_status(401)
            return response
        redirect = web.HTTPSeeOther("/")
        c.sessions.login(redirect, token, secure=request.secure)
        raise redirect

    async def logout(request: web.Request) -> web.Response:
        redirect = web.HTTPSeeOther("/login")
        c.sessions.logout(request, redirect)
        raise redirect

    async def overview(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        return render("overview.html", me=me, path="/", data=c.sampler.overview())

    async def imports(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        data = await _gather(imports=(c.ops.list_imports,), runs=(c.ops.import_runs, None))
        return render("imports.html", me=me, path="/imports", jobs=list(c.ops.jobs.values()), **data)

    async def streams(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        data = await _gather(streams=(c.ops.list_streams,), dlq=(c.ops.dlq, None))
        rates = c.sampler.stream_rates()
        recent = c.sampler.recent_deliveries()
        return render("streams.html", me=me, path="/streams", rates=rates, recent=recent, **data)

    async def workspaces(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        data = await _gather(workspaces=(c.ops.list_workspaces,))
        return render("workspaces.html", me=me, path="/workspaces", **data)

    async def topics(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        data = await _gather(topics=(c.ops.topics,), groups=(c.ops.consumer_groups,))
        return render("topics.html", me=me, path="/topics", **data)

    async def audit(request: web.Request) -> web.Response:
        me = _logged_in(request, c)
        data = await _gather(records=(c.audit.recent, 200))
        return render("audit.html", me=me, path="/audit", **data)

    return [
        web.get("/login", login_page),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/", overview),
        web.get("/imports", imports),
        web.get("/streams", streams),
        web.get("/workspaces", workspaces),
        web.get("/topics", topics),
        web.get("/audit", audit),
        web.static("/static", HERE / "static"),
    ]
