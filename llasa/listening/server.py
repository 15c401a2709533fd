"""The listening page's web app (Starlette): the A/B page, each rater's next pair, judgments in, clips out."""

import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from llasa.listening.store import TAGS, PreferenceStore, check_rater

PAGE = Path(__file__).with_name("page.html")
TOKEN_HEADER = "x-listen-token"
DEFAULT_HOST = "127.0.0.1"  # local raters only, unless the command names another interface
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


def create_app(store: PreferenceStore, token: str | None = None) -> Starlette:
    """The app over one store. With a token, every request must carry it (?token= or the X-Listen-Token header)."""

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
        return secrets.compare_digest(given.encode(), token.encode())

    def refused() -> Response:
        return JSONResponse({"error": "a valid access token is needed (open the link with ?token=...)"}, 403)

    def page(request: Request) -> Response:
        if not authorised(request):
            return refused()
        html = PAGE.read_text(encoding="utf-8").replace("__TAGS__", ",".join(TAGS))
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def next_pair(request: Request) -> Response:
        if not authorised(request):
            return refused()
        try:
            rater = check_rater(request.query_params.get("rater", ""))
        except ValueError as e:
            return JSONResponse({"error": str(e)}, 400)
        presentation = store.next_pair(rater)
        done, total = store.progress(rater)
        pair = None
        if presentation is not None:
            pair = {
                "pair_id": presentation.pair_id,
                "a": presentation.a,
                "b": presentation.b,
                "text": presentation.text,
            }
        return JSONResponse({"pair": pair, "done": done, "total": total}, headers={"Cache-Control": "no-store"})

    async def judge(request: Request) -> Response:
        if not authorised(request):
            return refused()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            rater = check_rater(body.get("rater", ""))
            new = store.record(
                rater, body.get("pair_id"), body.get("a"), body.get("b"), body.get("choice"), body.get("tags", [])
            )
        except ValueError as e:  # also a body that is not JSON
            return JSONResponse({"error": str(e)}, 400)
        done, total = store.progress(rater)
        return JSONResponse({"saved": True, "new": new, "done": done, "total": total})

    def clip(request: Request) -> Response:
        if not authorised(request):
            return refused()
        path = store.clip_path(request.path_params["clip_id"])
        if path is None:
            return JSONResponse({"error": "no such clip"}, 404)
        if not path.is_file():
            return JSONResponse({"error": "the clip's file is gone"}, 404)
        media_type = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    routes = [
        Route("/", page),
        Route("/api/next", next_pair),
        Route("/api/judgments", judge, methods=["POST"]),
        Route("/clips/{clip_id}", clip),
    ]
    return Starlette(routes=routes)


def serve(store: PreferenceStore, host: str = DEFAULT_HOST, port: int = 8000, token: str | None = None) -> None:
    """Run the page with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store, token), host=host, port=port, log_level="warning")
