"""File responses with HTTP Range and strong ETags, read through fsspec."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import HTTPException, Request, Response
from fastapi.responses import StreamingResponse

__all__ = ["file_response"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def file_response(
    request: Request, fs: object, path: str, media_type: str, etag: str, immutable: bool = False
) -> Response:
    size = int(fs.size(path))  # type: ignore[attr-defined]
    headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
    if immutable:
        headers["Cache-Control"] = "public, max-age=31536000, immutable"
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    rng = request.headers.get("range")
    start, end = 0, size - 1
    status = 200
    if rng:
        m = _RANGE.match(rng.strip())
        if not m or (not m.group(1) and not m.group(2)):
            raise HTTPException(
                416, f"unsupported range {rng!r}", headers={"Content-Range": f"bytes */{size}"}
            )
        if m.group(1):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
        else:
            start = max(0, size - int(m.group(2)))
        end = min(end, size - 1)
        if start > end or start >= size:
            raise HTTPException(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)

    def chunks() -> Iterator[bytes]:
        left = end - start + 1
        with fs.open(path, "rb") as f:  # type: ignore[attr-defined]
            f.seek(start)
            while left > 0:
                block = f.read(min(left, 1 << 20))
                if not block:
                    break
                left -= len(block)
                yield block

    return StreamingResponse(chunks(), status_code=status, media_type=media_type, headers=headers)
