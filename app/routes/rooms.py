"""Presenter rooms over HTTP: create a room, read it, change its view (presenter only), end it, and
the followers' Server-Sent Events stream; plus the /join pages students open. Thin: the store is
app/rooms.py, the page side static/js/present.js.

A view is a page's path and query string. Followers load that URL themselves, so the traces they
ask for are the presenter's, served from the trace cache (or joined while in flight): a room of 60
costs one model run per change.
"""

from __future__ import annotations

import json
import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from app import i18n
from app import rooms as store
from app.i18n import N_
from app.schemas import ErrorOut
from app.routes.errors import JSON_ERRORS, JSONBodyRoute
from app.routes.pages import DIFFUSION_PAGES, TEXT_PAGES, VISION_PAGES, render, request_language
from app.settings import Settings

# 404 for a room code there is not, 403 for a change without the presenter's secret, 415 for a body
# not sent as JSON: documented for every operation (the fuzz test holds answers to the schema).
router = APIRouter(tags=["rooms"], route_class=JSONBodyRoute, responses={
    **JSON_ERRORS, 403: {"model": ErrorOut, "description": "Only the room's presenter may do this."},
})

# A room may only point its followers at glassbox's own pages, never anywhere else.
PAGE_PATHS = frozenset(["/"] + [p for p, _, _ in TEXT_PAGES + VISION_PAGES + DIFFUSION_PAGES])
CODE_RE = re.compile(f"[{store.CODE_ALPHABET}]{{{store.CODE_LENGTH}}}")
SECRET_HEADER = "X-Room-Secret"


def get_rooms(request: Request) -> store.Rooms:
    # Made on first use from the app's settings, so create_app() only has to include this router.
    rooms = getattr(request.app.state, "rooms", None)
    if rooms is None:
        s: Settings = request.app.state.settings
        rooms = request.app.state.rooms = store.Rooms(s.max_rooms, s.max_followers_per_room, s.room_idle_s)
    return rooms


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


RoomsDep = Annotated[store.Rooms, Depends(get_rooms)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SecretDep = Annotated[str | None, Header(alias=SECRET_HEADER, description="The presenter's secret, from POST /api/rooms.")]


class ViewIn(BaseModel):
    path: str = Field(max_length=100, description="A glassbox page.", examples=["/text/attention"])
    query: str = Field("", description="The page's query string, its whole state.", examples=["text=The+cat+sat&layer=1&head=2"])


class RoomOut(BaseModel):
    code: str = Field(description="What students type at /join.")
    version: int = Field(description="1 when made, one more for every change of view.")
    path: str
    query: str
    followers: int = Field(description="Pages following now (open event streams).")
    max_followers: int
    idle_s: float = Field(description="The room ends after this long without a word from its presenter.")
    join_url: str


class RoomCreated(RoomOut):
    secret: str = Field(description=f"Only the presenter has it; send it as the {SECRET_HEADER} header to change the room.")


def room_out(state: store.RoomState, settings: Settings) -> dict:
    return {
        "code": state.code, "version": state.version, "path": state.view.path, "query": state.view.query,
        "followers": state.followers, "max_followers": settings.max_followers_per_room,
        "idle_s": settings.room_idle_s, "join_url": f"/join/{state.code}",
    }


def to_view(body: ViewIn, settings: Settings) -> store.View:
    if body.path not in PAGE_PATHS:
        raise HTTPException(422, f"path {body.path!r} is not a glassbox page; a room shows one of: {', '.join(sorted(PAGE_PATHS))}.")
    query = body.query.removeprefix("?")
    if len(query.encode()) > settings.room_state_max_bytes:
        raise HTTPException(422, f"The query string is longer than {settings.room_state_max_bytes:,} bytes, a room's limit.")
    return store.View(body.path, query)


def to_code(code: str) -> str:
    """Codes are shown in capitals; a student may type them in lower case."""
    return code.strip().upper()


def refused(e: store.RoomError, code: str, settings: Settings) -> HTTPException:
    if isinstance(e, store.NoSuchRoom):
        return HTTPException(404, f"There is no room {code}: it has ended, or the code is mistyped.")
    if isinstance(e, store.NotPresenter):
        return HTTPException(403, f"Only the presenter of room {code} can change it (the {SECRET_HEADER} header is missing or wrong).")
    if isinstance(e, store.TooManyRooms):
        return HTTPException(503, f"All {settings.max_rooms} rooms are in use; try again in {e.retry_after_s} s.",
                             headers={"Retry-After": str(e.retry_after_s)})
    if isinstance(e, store.RoomFull):
        return HTTPException(503, f"Room {code} is full ({settings.max_followers_per_room} followers); try again in a moment.",
                             headers={"Retry-After": str(settings.retry_after_s)})
    raise e


@router.post("/api/rooms", status_code=201, response_model=RoomCreated)
async def create_room(body: ViewIn, rooms: RoomsDep, settings: SettingsDep):
    """Start presenting `body`: a new room, its code and the presenter's secret."""
    view = to_view(body, settings)
    try:
        state, secret = await rooms.create(view)
    except store.RoomError as e:
        raise refused(e, "", settings) from None
    return {**room_out(state, settings), "secret": secret}


@router.get("/api/rooms/{code}", response_model=RoomOut)
async def get_room(code: str, rooms: RoomsDep, settings: SettingsDep):
    """The room's view now and how many follow it."""
    code = to_code(code)
    try:
        return room_out(await rooms.get(code), settings)
    except store.RoomError as e:
        raise refused(e, code, settings) from None


@router.put("/api/rooms/{code}/state", response_model=RoomOut)
async def set_room_state(code: str, body: ViewIn, rooms: RoomsDep, settings: SettingsDep, secret: SecretDep = None):
    """Show `body` to every follower (presenter only: 403 without the secret). The same view again
    only keeps the room alive."""
    code = to_code(code)
    view = to_view(body, settings)
    try:
        return room_out(await rooms.update(code, secret, view), settings)
    except store.RoomError as e:
        raise refused(e, code, settings) from None


@router.post("/api/rooms/{code}/alive", response_model=RoomOut)
async def keep_room_alive(code: str, rooms: RoomsDep, settings: SettingsDep, secret: SecretDep = None):
    """The presenter's page is still open: the room stays (presenter only). Answers the follower count."""
    code = to_code(code)
    try:
        return room_out(await rooms.touch(code, secret), settings)
    except store.RoomError as e:
        raise refused(e, code, settings) from None


@router.delete("/api/rooms/{code}", status_code=204)
async def end_room(code: str, rooms: RoomsDep, settings: SettingsDep, secret: SecretDep = None):
    """End the room now (presenter only); followers receive `closed`."""
    code = to_code(code)
    try:
        await rooms.close(code, secret)
    except store.RoomError as e:
        raise refused(e, code, settings) from None
    return Response(status_code=204)


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/api/rooms/{code}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "state… then closed"}})
async def room_events(code: str, rooms: RoomsDep, settings: SettingsDep):
    """Follow a room, as Server-Sent Events: `state` (a RoomOut) now and at every change, a comment
    every few seconds to keep the stream open, and `closed` when the room ends."""
    code = to_code(code)
    try:
        await rooms.subscribe(code)  # before the stream starts, so 404 / 503 are plain answers
    except store.RoomError as e:
        raise refused(e, code, settings) from None

    left = False

    async def leave():
        # Once, whichever comes first: the stream's own end, or the response's background task
        # (which also runs when the client hangs up before the first event was written).
        nonlocal left
        if not left:
            left = True
            await rooms.unsubscribe(code)

    async def events():
        version = 0
        try:
            yield "retry: 2000\n\n"  # a dropped connection reconnects after 2 s
            while True:
                try:
                    state = await rooms.wait(code, version, settings.room_ping_s)
                except store.NoSuchRoom:
                    yield sse("closed", {"code": code, "detail": f"Room {code} has ended."})
                    return
                if state.version > version:
                    version = state.version
                    yield sse("state", room_out(state, settings), version)
                else:
                    yield ": ping\n\n"
        finally:
            await leave()

    return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(leave),
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/join", include_in_schema=False)
async def join_form(request: Request, rooms: RoomsDep, code: str = ""):
    """The page where a student types the code; with ?code= it goes straight to the room."""
    if code:
        return await join(request, code, rooms)
    return render(request, "join.html", title=N_("Join a room"), code="", message="")


@router.get("/join/{code}", include_in_schema=False)
async def join(request: Request, code: str, rooms: RoomsDep):
    """The link a presenter shares: to the room's current view, marked `room=CODE` for present.js."""
    code = to_code(code)
    try:
        state = await rooms.get(code) if CODE_RE.fullmatch(code) else None
    except store.NoSuchRoom:
        state = None
    if state is None:
        shown = code[:20]
        _ = i18n.gettext_for(request_language(request))
        message = _("There is no room %(code)s: it has ended, or the code is mistyped.") % {"code": shown}
        response = render(request, "join.html", title=N_("Join a room"), code=shown, message=message)
        response.status_code = 404
        return response
    query = state.view.query
    extra = {"room": code}
    if request.query_params.get(i18n.LANG_KEY) in i18n.LANGUAGES:  # the student's language, not the presenter's
        extra[i18n.LANG_KEY] = request.query_params[i18n.LANG_KEY]
    target = f"{state.view.path}?{query + '&' if query else ''}{urlencode(extra)}"
    return RedirectResponse(target, 303, headers={"Cache-Control": "no-store"})
