"""Similar clips (by clip, vector, an uploaded image or words) and corner cases: the same
functions the CLI calls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import LakeDep, Reader
from mining.datasets.curation import DatasetQuery, clip_predicate
from mining.policies import ranking
from mining.search.by_example import ImageError, similar_to_image
from mining.search.by_text import similar_to_text
from mining.search.queries import Neighbour, corner_cases, similar
from storage.bounds import MAX_ID, MAX_NAME, ClipId, Name, QueryText
from storage.errors import ConfigError

_VECTOR_DIMS = 8192
_FLOAT32_MAX = 3.4028234663852886e38
Coordinate = Annotated[float, Field(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX, allow_inf_nan=False)]

router = APIRouter(prefix="/v1", tags=["mining"])

IMAGE_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
"""The images a query by example takes, by their first bytes (the part's declared
type is not trusted: a canvas, a phone and curl each say something else)."""


class SimilarRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # exactly one of the two, as the schema says it (clients and fuzzers read it)
            "oneOf": [
                {"required": ["clip_id"], "properties": {"clip_id": {"type": "string", "maxLength": MAX_ID}}},
                {
                    "required": ["vector"],
                    "properties": {"vector": {"type": "array", "maxItems": _VECTOR_DIMS}},
                },
            ]
        },
    )
    clip_id: ClipId | None = None
    vector: list[Coordinate] | None = Field(default=None, max_length=_VECTOR_DIMS)
    k: int = Field(default=10, ge=1, le=1000)
    filters: DatasetQuery | None = None
    model: Name | None = None
    space: Literal["clip", "behaviour"] = Field(
        default="clip",
        description="clip: the whole vector (near duplicates first); behaviour: what the car did "
        "and what moved only, whatever the street looked like (more like this of a corner case)",
    )


class ImageSearchForm(BaseModel):
    """The fields of a multipart query by example, beside its ``image`` file."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=10, ge=1, le=1000)
    filters: Json[DatasetQuery] | None = Field(default=None, description="a DatasetQuery as JSON text")
    model: Name | None = None


class TextSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: QueryText
    k: int = Field(default=10, ge=1, le=1000, strict=True)  # a JSON integer: not "5", not true
    filters: DatasetQuery | None = None
    model: Name | None = Field(
        default=None,
        description="a text-image version, NAME@VERSION or NAME (default: the current model if it "
        "has a text side, else the text-image version made current last)",
    )


class NeighbourPublic(BaseModel):
    clip_id: str
    distance: float


class NeighboursPublic(BaseModel):
    data: list[NeighbourPublic]
    count: int


class TextHitPublic(BaseModel):
    clip_id: str
    score: float = Field(description="cosine similarity of the text and the clip (1 - distance**2 / 2)")
    distance: float = Field(description="L2 distance of the two unit vectors in the clip index")


class TextHitsPublic(BaseModel):
    data: list[TextHitPublic]
    count: int
    model: str = Field(description="the NAME@VERSION whose two sides ranked them")


class CornerCasePublic(BaseModel):
    """A ranked clip: ``by=novelty`` fills the mining scores, ``by=disagreement`` the policy
    version's figures (``policy_errors``; errors in the signals' own units, null where the
    policy does not output that action or, for the brake onsets, nobody braked)."""

    clip_id: str
    novelty: float | None = Field(default=None, description="by=novelty: the ranking score")
    rarity: float | None = None
    signal_rarity: float | None = None
    cluster_id: int | None = None
    knn_distances: list[float] = []
    disagreement: float | None = Field(
        default=None, description="by=disagreement: the ranking score, in units of the policy's error_scale"
    )
    steps: int | None = Field(default=None, description="steps of the clip the policy was run at")
    worst_step_s: float | None = Field(default=None, description="the worst step's time in the clip (s)")
    worst_accel_err: float | None = Field(default=None, description="m/s^2, at the worst step")
    worst_steer_err: float | None = Field(default=None, description="degrees, at the worst step")
    accel_mean_abs: float | None = Field(default=None, description="m/s^2, over every step and horizon point")
    accel_max_abs: float | None = None
    accel_fde: float | None = Field(default=None, description="m/s^2 at the horizon's end, mean over steps")
    steer_mean_abs: float | None = Field(
        default=None, description="degrees, over every step and horizon point"
    )
    steer_max_abs: float | None = None
    steer_fde: float | None = None
    accel_steps_over: int | None = Field(
        default=None, description="steps whose accel error exceeds 0.5 m/s^2"
    )
    brake_onset_driver_s: float | None = None
    brake_onset_policy_s: float | None = None
    brake_onset_gap_s: float | None = Field(default=None, description="policy minus driver (late > 0), s")
    events: list[str] | None = Field(default=None, description="by=disagreement: the clip's trigger events")


class CornerCasesPublic(BaseModel):
    data: list[CornerCasePublic]
    count: int
    by: Literal["novelty", "disagreement"] = "novelty"
    policy: str | None = Field(default=None, description="by=disagreement: the NAME@VERSION ranked by")


def _request_body() -> dict[str, Any]:
    ref = "#/components/schemas/{model}"  # DatasetQuery and its parts are components already
    form = ImageSearchForm.model_json_schema(ref_template=ref)
    form.pop("$defs", None)
    form["properties"] = {
        "image": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
        **form["properties"],
    }
    form["required"] = ["image"]
    json_body = SimilarRequest.model_json_schema(ref_template=ref)
    json_body.pop("$defs", None)
    return {
        "required": True,
        "content": {"application/json": {"schema": json_body}, "multipart/form-data": {"schema": form}},
    }


@router.post(
    "/search/similar",
    response_model=NeighboursPublic,
    openapi_extra={"requestBody": _request_body()},
    responses={413: {"description": "image too large"}, 415: {"description": "not a JPEG or PNG"}},
)
async def search_similar(request: Request, lake: LakeDep, _: Reader) -> NeighboursPublic:
    """The ``k`` nearest clips of a clip or a vector (JSON body), or of an image: a
    multipart form with an ``image`` file (JPEG or PNG) and the same ``k``, ``filters``
    (JSON text) and ``model``, searched on what the clips' frames show
    (:mod:`mining.search.by_example`)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        hits = await _by_image(request, lake)
    else:
        body = _validated(SimilarRequest, await request.body())
        if (body.clip_id is None) == (body.vector is None):
            raise HTTPException(422, "give exactly one of clip_id or vector (or upload an image)")
        filters = body.filters
        hits = await run_in_threadpool(
            lambda: similar(
                lake,
                clip_id=body.clip_id,
                vector=body.vector,
                k=body.k,
                where=clip_predicate(lake, filters) if filters else None,  # scenarios read the lake
                model=body.model,
                space=body.space,
            )
        )
    return NeighboursPublic(
        data=[NeighbourPublic(clip_id=h.clip_id, distance=h.distance) for h in hits], count=len(hits)
    )


def _validated(model: type[SimilarRequest], raw: bytes) -> SimilarRequest:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "not valid JSON (UTF-8)", "type": "json_invalid"}]
            ) from None
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


async def _by_image(request: Request, lake: LakeDep) -> list[Neighbour]:
    settings = request.app.state.settings
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "image: a JPEG or PNG file field is required")
        data = await upload.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise HTTPException(413, f"image over {settings.max_image_bytes} bytes")
        if not any(data.startswith(magic) for magic in IMAGE_TYPES):
            raise HTTPException(415, "image: not a JPEG or PNG file (by its first bytes)")
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if name == "image":
                continue
            if not isinstance(value, str) or name in fields:
                raise HTTPException(422, f"{name}: one text field expected")
            fields[name] = value
    try:
        q = ImageSearchForm.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    filters = q.filters
    try:
        return await run_in_threadpool(
            lambda: similar_to_image(
                lake,
                data,
                k=q.k,
                where=clip_predicate(lake, filters) if filters else None,
                model=q.model,
                max_pixels=settings.max_image_pixels,
            )
        )
    except ImageError as exc:
        raise HTTPException(422, f"image: {exc}") from None


@router.post("/search/text", response_model=TextHitsPublic)
def search_text(body: TextSearchRequest, lake: LakeDep, _: Reader) -> TextHitsPublic:
    """The ``k`` clips a text describes best (:mod:`mining.search.by_text`): the words
    embedded by a ``text-image`` version's text side, searched in its clip index, highest
    cosine similarity first. A version without a text side is a 400 naming those with one.
    A plain ``def``: FastAPI runs it in the threadpool (the text side's first load, the
    index search and the filters' reads block)."""
    filters = body.filters
    spec, hits = similar_to_text(
        lake,
        body.text,
        k=body.k,
        where=clip_predicate(lake, filters) if filters else None,
        model=body.model,
    )
    return TextHitsPublic(
        data=[TextHitPublic(clip_id=h.clip_id, score=h.score, distance=h.distance) for h in hits],
        count=len(hits),
        model=spec.ref,
    )


@router.get("/mining/corner-cases", response_model=CornerCasesPublic)
def mining_corner_cases(
    lake: LakeDep,
    _: Reader,
    model: str | None = Query(None, max_length=MAX_NAME, description="by=novelty: the model version"),
    k: int = Query(50, ge=1, le=10_000),
    event: str | None = Query(None, max_length=MAX_NAME),
    by: Literal["novelty", "disagreement"] = Query(
        "novelty",
        description="novelty: the latest mining run's ranking; disagreement: where the `policy` "
        "version's actions were furthest from the driver's (`fleetmine shadow`)",
    ),
    policy: str | None = Query(
        None, max_length=MAX_NAME, description="by=disagreement: NAME@VERSION, or NAME for its latest"
    ),
) -> CornerCasesPublic:
    """Clips ranked by novelty (near duplicates left out) or by a policy version's
    disagreement with the driver, highest first; ``event`` keeps the clips with that trigger."""
    if by == "novelty":
        if policy is not None:
            raise ConfigError("policy ranks by=disagreement; by=novelty ranks by a model's scores")
        rows: list[dict[str, Any]] = corner_cases(lake, k=k, event=event, model=model)
        return CornerCasesPublic(data=[CornerCasePublic(**r) for r in rows], count=len(rows))
    if model is not None:
        raise ConfigError("model ranks by=novelty; by=disagreement ranks by a policy version (policy)")
    if policy is None:
        raise ConfigError(
            f"by=disagreement needs policy=NAME@VERSION; registered: {ranking.registered(lake) or 'none'}"
        )
    spec = ranking.policy_spec(lake, policy)
    rows = ranking.top_disagreement(lake, spec, k, event)
    return CornerCasesPublic(
        data=[CornerCasePublic(**r) for r in rows], count=len(rows), by="disagreement", policy=spec.ref
    )
