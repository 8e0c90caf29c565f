"""The web console: static files in this folder, served at `/console/` by the API.

Plain JavaScript modules and a vendored chart library (vendor/, with its licence): nothing
is built at install or run time. The page talks to the public `/v1` API only, with the key
the user signs in with, so it can do nothing a script with that key could not.
"""

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

FOLDER = Path(__file__).parent
# Only this origin's own scripts, styles and connections: no inline script, no CDN, no frame.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data: blob:; connect-src 'self'; "
                           "frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        # The files change with the package: revalidate rather than run a stale app.js.
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_console(app: FastAPI) -> None:
    app.mount("/console", ConsoleFiles(directory=FOLDER, html=True), name="console")
