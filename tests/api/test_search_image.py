"""``POST /v1/search/similar`` with an uploaded image, over real HTTP on the synth catalog."""

from __future__ import annotations

import io
import json
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from mining.encoders.registry import register
from mining.search.by_example import similar_to_image
from storage import Lake, Settings
from tests.api.conftest import auth, serve

URL = "/v1/search/similar"


def _frame_of(lake: Lake, clip_id: str) -> Image.Image:
    (row,) = lake.read("clips", columns=["video_uri"], where=f"clip_id = '{clip_id}'").to_pylist()
    with av.open(io.BytesIO(lake.root.fs.cat_file(row["video_uri"]))) as c:
        frames = [f.to_image() for f in c.decode(video=0)]
    return frames[len(frames) // 2]


def _bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _post(base: str, token: str | None, image: bytes | None, **fields: Any) -> httpx.Response:
    files = {"image": ("frame", image, "application/octet-stream")} if image is not None else None
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    headers = auth(token) if token else {}
    return httpx.post(f"{base}{URL}", files=files, data=data or None, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def frame(server: tuple[str, Lake, dict[str, str]]) -> tuple[str, Image.Image]:
    _, lake, _ = server
    clips = sorted(lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    return clips[len(clips) // 2], _frame_of(lake, clips[len(clips) // 2])


def test_an_uploaded_frame_finds_its_clip_under_the_same_filters_and_k(
    server: tuple[str, Lake, dict[str, str]], frame: tuple[str, Image.Image]
) -> None:
    base, lake, tokens = server
    clip_id, img = frame
    (vehicle,) = lake.read("clips", columns=["vehicle_id"], where=f"clip_id = '{clip_id}'").to_pylist()
    for fmt in ("JPEG", "PNG"):
        r = _post(base, tokens["reader"], _bytes(img, fmt), k="5")
        assert r.status_code == 200, r.text
        ids = [h["clip_id"] for h in r.json()["data"]]
        assert r.json()["count"] == 5 == len(ids) and clip_id in ids, (fmt, ids)
    filters = {"vehicles": [vehicle["vehicle_id"]]}
    r = _post(base, tokens["reader"], _bytes(img, "JPEG"), k="3", filters=filters)
    assert r.status_code == 200, r.text
    where = f"vehicle_id = '{vehicle['vehicle_id']}'"
    want = similar_to_image(lake, _bytes(img, "JPEG"), k=3, where=where)
    assert [(h["clip_id"], round(h["distance"], 5)) for h in r.json()["data"]] == [
        (h.clip_id, round(h.distance, 5)) for h in want
    ]
    # The JSON body is as it was.
    by_id = httpx.post(f"{base}{URL}", json={"clip_id": clip_id, "k": 3}, headers=auth(tokens["reader"]))
    assert by_id.status_code == 200 and by_id.json()["count"] == 3 and clip_id not in by_id.text
    schema = httpx.get(f"{base}/openapi.json").json()["paths"][URL]["post"]["requestBody"]["content"]
    assert set(schema) == {"application/json", "multipart/form-data"}
    assert schema["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"


def test_what_an_upload_is_refused_for_and_its_status(
    server: tuple[str, Lake, dict[str, str]], frame: tuple[str, Image.Image]
) -> None:
    base, lake, tokens = server
    _, img = frame
    jpeg = _bytes(img, "JPEG")
    blind = register(lake, "builtin-motion", "builtin", params={"weights": {"appearance": 0.0}})
    assert not blind.is_current  # a second version: the lake keeps its current model
    bomb = _bytes(Image.new("L", (8000, 6000)), "PNG")  # 48 Mpx in a few kB
    assert len(bomb) < 200_000
    for image, fields, status, code, says in (
        (_bytes(img, "GIF"), {}, 415, "unsupported_media_type", "not a JPEG or PNG"),
        (b"just some text", {}, 415, "unsupported_media_type", "not a JPEG or PNG"),
        (jpeg[: len(jpeg) // 3], {}, 422, "invalid_request", "does not decode"),
        (bomb, {}, 422, "invalid_request", f"over the limit of {Settings().max_image_pixels} pixels"),
        (None, {"k": "3"}, 422, "invalid_request", "image"),
        (jpeg, {"k": "0"}, 422, "invalid_request", "body.k"),
        (jpeg, {"clip_id": "x"}, 422, "invalid_request", "body.clip_id"),
        (jpeg, {"filters": "{not json"}, 422, "invalid_request", "body.filters"),
        (jpeg, {"model": blind.ref}, 400, "bad_request", "no frame encoder"),
        (jpeg, {"model": "nope@3"}, 400, "bad_request", "no model nope@3"),
    ):
        if image is None:  # a form without the file
            r = httpx.post(f"{base}{URL}", files={"k": (None, "3")}, headers=auth(tokens["reader"]))
        else:
            r = _post(base, tokens["reader"], image, **fields)
        assert r.status_code == status and r.json()["error"]["code"] == code, (fields, r.status_code, r.text)
        assert says in r.json()["error"]["message"] and "Traceback" not in r.text
    assert _post(base, None, jpeg).status_code == 401


def test_the_image_size_limit_is_a_setting(server: tuple[str, Lake, dict[str, str]], frame: Any) -> None:
    _, lake, tokens = server
    _, img = frame
    jpeg = _bytes(img, "JPEG")
    settings = Settings(lake=lake.uri, max_image_bytes=len(jpeg) - 1, max_body_bytes=64_000)
    with serve(settings) as base:
        over = _post(base, tokens["reader"], jpeg)
        assert over.status_code == 413 and over.json()["error"]["code"] == "payload_too_large", over.text
        assert f"image over {len(jpeg) - 1} bytes" in over.json()["error"]["message"]
        huge = _post(base, tokens["reader"], jpeg * 40)  # past body + image limit: refused unread
        assert huge.status_code == 413 and "request body over" in huge.json()["error"]["message"]
        # a JSON body keeps the plain body limit
        big = httpx.post(
            f"{base}{URL}", json={"vector": [0.123456789] * 8192}, headers=auth(tokens["reader"])
        )
        assert big.status_code == 413
    with serve(Settings(lake=lake.uri, max_image_bytes=len(jpeg))) as base:
        assert _post(base, tokens["reader"], jpeg, k="2").status_code == 200
