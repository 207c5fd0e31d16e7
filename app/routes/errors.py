"""What the API routers share about errors: the 404 every model lookup can give, documented, and
a route class for JSON bodies: a body that is not JSON by its Content-Type is a 415, one that cannot
be parsed a 422, both in the app's own error shape."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import schemas

# Every operation that names a model (or a picture, or a cached run) can get a 404; listed in the
# OpenAPI schema so that it lists every status a client can get.
NOT_FOUND = {404: {"model": schemas.ErrorOut, "description": "No such model, picture or cached run on this server."}}
# ...and every operation with a JSON body a 415 for another Content-Type (JSONBodyRoute).
JSON_ERRORS = {**NOT_FOUND, 415: {"model": schemas.ErrorOut, "description": "The body is not sent as application/json."}}


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class JSONBodyRoute(APIRoute):
    """A JSON body sent under another Content-Type is a 415. A body FastAPI cannot parse as JSON for
    a reason other than its syntax (not UTF-8; nested so deep that the parser gives up) is a 422 like
    any other invalid JSON, in the app's error shape. FastAPI raises Starlette's own HTTPException(400)
    for those, which the app's handler (registered for FastAPI's subclass) does not see: the client
    got a bare, undocumented {"detail"}."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        takes_json = self.body_field is not None

        async def parse_errors_are_422(request: Request):
            # FastAPI leaves a body sent as text/plain or a form unparsed and answers 422 "Input should
            # be a valid dictionary", which sends the client looking at the wrong thing.
            if takes_json and not is_json(request.headers.get("content-type", "")) and await request.body():
                raise HTTPException(415, "The body must be JSON, sent with Content-Type: application/json.")
            try:
                return await handler(request)
            except StarletteHTTPException as e:
                if isinstance(e, HTTPException) or e.status_code != 400:
                    raise
                why = {UnicodeDecodeError: "it is not UTF-8", RecursionError: "it is nested too deeply"}
                reason = why.get(type(e.__cause__), "it is not valid JSON")
                raise HTTPException(422, f"body: the request body could not be read as JSON: {reason}.") from e

        return parse_errors_are_422
