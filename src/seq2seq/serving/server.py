"""HTTP server: ``POST /v1/generate``, ``GET /v1/models``, ``GET /health`` and a web page at ``/``.

Each model is loaded once, at start-up. All of a model's inference runs on one worker thread
(:class:`seq2seq.serving.worker.ModelWorker`), so torch is never entered concurrently and the event loop stays free
to accept requests; requests that wait with equal options are decoded as one batch. Every
error is JSON ``{"error": message}`` (plus ``fields`` for a 422). No route takes a file path:
the page's assets are read from this package once, and only the run directories named at
start-up are read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from seq2seq import __version__
from seq2seq.api import Model, ModelInfo, Result, attention_rows, load
from seq2seq.checkpoint import RunDirError
from seq2seq.data.valid_text import check_text, escape_surrogates, surrogate_problem
from seq2seq.serving.connections import DeadlineH11Protocol, raise_open_file_limit
from seq2seq.serving.limits import Limits
from seq2seq.translator import Generation, InputError
from seq2seq.serving.worker import ModelWorker, Unavailable

logger = logging.getLogger(__name__)

MAX_BEAM = 16
MAX_LEN = 512
# The page may load only what this server sends: no CDN, no inline script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
# Longer than clients keep idle connections (httpx: 5 s, uvicorn's default too), so the client
# closes an idle connection first and never sends a request on one the server is closing.
KEEP_ALIVE_S = 75
ASSET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


# ----------------------------------------------------------------------------- schemas
# JSON's "\ud800" escape is valid JSON but not text UTF-8 can carry: a 422 naming the field and the
# character's position, before the text reaches the model, a log line or the response.
Text = Annotated[str, AfterValidator(lambda text: check_text(text, what="the text"))]


class GenerateRequest(BaseModel):
    """Texts and decoding options; the option names are those of :meth:`seq2seq.api.Model.generate`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["sort list `l` in reverse"], "beam": 5, "nbest": 3}]},
    )

    inputs: list[Text] = Field(min_length=1, description="source texts, decoded independently")
    model: Text | None = Field(None, description="a name from GET /v1/models; default: the first model served")
    beam: int = Field(1, ge=1, le=MAX_BEAM, description="beam size; 1 = greedy search")
    nbest: int = Field(1, ge=1, le=MAX_BEAM, description="outputs per input, at most `beam`")
    length_penalty: Literal["none", "gnmt", "average"] | None = Field(
        None, description="how a beam ranks finished outputs of different lengths: none (sums of log-probabilities), "
        "gnmt (divided by ((5+len)/6)^alpha) or average (divided by len^alpha); default: the run's decode.length_penalty (none for a model served through ctranslate2)")
    alpha: float | None = Field(None, ge=0.0, le=5.0, description="length penalty exponent; default: the run's decode.alpha")
    constrain: Literal["grammar", "python", "none"] | None = Field(
        None, description="code models: 'grammar' keeps only prefixes Python's parser can complete (every finished "
        "output parses); 'python' only prunes prefixes whose brackets cannot balance; 'none': neither; "
        "default: the run's decode.constrain. With a beam, outputs that parse come first",
    )
    sample: bool = Field(False, description="draw one output per input instead of searching")
    temperature: float = Field(1.0, gt=0.0, le=10.0)
    top_k: int = Field(0, ge=0, le=1_000_000, description="sample among the k likeliest tokens; 0 = all")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sample within this probability mass")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="makes sampling reproducible")
    max_len: int | None = Field(None, ge=1, le=MAX_LEN, description="output token limit; default: the model's")
    no_repeat_ngram_size: int | None = Field(
        None, ge=0, le=MAX_LEN, description="no n-gram of this many tokens twice in an output (a guard against "
        "runaway loops; greedy and beam search only); 0 = off; default: the run's decode.no_repeat_ngram_size")
    attention: bool = Field(True, description="include the attention matrices")

    # Field validators (not one model validator) so that a 422 names the offending field;
    # each runs after the fields declared before it, whose values are in `info.data`.
    @field_validator("nbest")
    @classmethod
    def _nbest_within_beam(cls, nbest: int, info: ValidationInfo) -> int:
        beam = info.data.get("beam")
        if beam is not None and nbest > beam:
            raise ValueError(f"nbest={nbest} cannot exceed beam={beam}")
        return nbest

    @field_validator("sample")
    @classmethod
    def _sample_without_beam(cls, sample: bool, info: ValidationInfo) -> bool:
        if sample and (info.data.get("beam", 1) > 1 or info.data.get("nbest", 1) > 1):
            raise ValueError("sampling draws one output per input: use beam=1 and nbest=1")
        return sample

    @field_validator("no_repeat_ngram_size")
    @classmethod
    def _no_repeat_without_sampling(cls, size: int | None, info: ValidationInfo) -> int | None:
        if size and info.data.get("sample"):
            raise ValueError("no_repeat_ngram_size is for greedy and beam search, not for sampling")
        return size

    def decoding_options(self) -> dict[str, object]:
        return self.model_dump(exclude={"inputs", "model", "attention"})


class Attention(BaseModel):
    source_tokens: list[str]
    output_tokens: list[str] = Field(description="row labels: the output tokens, then <eos> when finished")
    weights: list[list[float]] = Field(description="[output, source]; each row sums to 1")
    heads: list[list[list[float]]] | None = Field(
        None, description="multi-head attention: [head, output, source], each head's weights (their mean is `weights`)"
    )


class GenerationOut(BaseModel):
    text: str
    tokens: list[str]
    score: float = Field(description="sum of token log-probabilities, <eos> included")
    normalized_score: float = Field(description="score divided by the length penalty; the n-best order")
    parses: bool | None = Field(description="ast.parse accepts the text (never executed); null for non-code models")
    finished: bool = Field(description="ended with <eos> rather than at max_len")
    attention: Attention | None


class ResultOut(BaseModel):
    source: str
    source_tokens: list[str]
    generations: list[GenerationOut] = Field(description="best first")


class GenerateResponse(BaseModel):
    model: str
    results: list[ResultOut] = Field(description="one per input, in order")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    models: list[str]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    error: str
    fields: list[FieldError] | None = None


ERRORS = {status: {"model": ErrorOut} for status in (404, 413, 422, 500, 503, 504)}


class ApiError(Exception):
    """An error answered as JSON ``{"error": message}`` with its HTTP status."""

    def __init__(self, status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers

    def response(self) -> JSONResponse:
        fields = [FieldError(field=self.field, message=self.message)] if self.field else None
        return JSONResponse(ErrorOut(error=self.message, fields=fields).model_dump(exclude_none=True), self.status, self.headers)


# ----------------------------------------------------------------------------- app
@dataclass(frozen=True)
class Served:
    model: Model
    worker: ModelWorker


def create_app(runs: list[Path], limits: Limits = Limits(), *, device: str = "auto", checkpoint: str = "best",
               quantize: str | None = None, runtime: str = "torch") -> FastAPI:
    """Load every run once (as :func:`seq2seq.load` does, with the same options) and return the app;
    a missing run or a name clash raises :class:`RunDirError`."""
    served = {}
    for run_dir in runs:
        model = load(run_dir, device=device, checkpoint=checkpoint, quantize=quantize, runtime=runtime)
        if model.name in served:
            raise RunDirError(f"{run_dir}: two runs are named {model.name!r}; serve runs whose folder names differ")
        served[model.name] = Served(model, ModelWorker(model, max_queue=limits.max_queue, merge_inputs=limits.micro_batch_inputs))
    if not served:
        raise RunDirError("no run directory given")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for entry in served.values():
            entry.worker.start()
        yield
        for entry in served.values():
            entry.worker.stop()

    app = FastAPI(title="seq2seq", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Generate with recurrent seq2seq models trained by `seq2seq train`.")
    _add_error_handlers(app)
    _add_api_routes(app, served, limits)
    _add_page_routes(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


def _add_api_routes(app: FastAPI, served: dict[str, Served], limits: Limits) -> None:
    def lookup(name: str | None, *, status: int, field: str | None) -> Served:
        entry = served.get(name or next(iter(served)))
        if entry is None:
            raise ApiError(status, f"unknown model {name!r}; served models: {', '.join(served)}", field=field)
        return entry

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", version=__version__, models=list(served))

    @app.get("/v1/models", response_model=list[ModelInfo])
    def models() -> list[ModelInfo]:
        return [entry.model.info for entry in served.values()]

    @app.get("/v1/models/{name}", response_model=ModelInfo, responses=ERRORS)
    def model_info(name: str) -> ModelInfo:
        return lookup(name, status=404, field=None).model.info

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(request: GenerateRequest) -> GenerateResponse:
        _check_size(request.inputs, limits)
        entry = lookup(request.model, status=422, field="model")
        if request.constrain not in (None, "none") and not entry.model.is_code:
            raise ApiError(422, f"model {entry.model.name!r} writes text, not Python: leave constrain out", field="constrain")
        try:
            future = entry.worker.submit(request.inputs, {**request.decoding_options(), "heads": request.attention})
        except Unavailable as error:
            raise ApiError(503, str(error), headers={"Retry-After": "1"}) from None
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
        except TimeoutError:
            raise ApiError(504, f"generation did not finish within {limits.timeout_s:g} s; "
                                "send fewer inputs or a smaller beam or max_len") from None
        except InputError as error:
            raise ApiError(422, str(error), field="inputs") from None
        if request.attention:
            _check_attention_size(results, limits)
        return GenerateResponse(model=entry.model.name, results=[_result_out(r, request.attention) for r in results])


def _check_size(texts: list[str], limits: Limits) -> None:
    if len(texts) > limits.max_inputs:
        raise ApiError(413, f"{len(texts)} inputs; at most {limits.max_inputs} per request", field="inputs")
    chars = sum(map(len, texts))
    if chars > limits.max_chars:
        raise ApiError(413, f"{chars} characters of input; at most {limits.max_chars} per request", field="inputs")


def _check_attention_size(results: list[Result], limits: Limits) -> None:
    """Refuse before the matrices become JSON: n-best lists of long outputs can hold millions of weights."""
    weights = sum(a.numel() for result in results for a in result.attention if a is not None)
    weights += sum(g.heads.numel() for result in results for g in result.generations if g.heads is not None)
    if weights > limits.max_attention_weights:
        raise ApiError(413, f"the attention matrices hold {weights:,} weights (at most {limits.max_attention_weights:,} "
                            "per response); ask with attention=false, fewer inputs or a smaller nbest", field="attention")


def _result_out(result: Result, with_attention: bool) -> ResultOut:
    return ResultOut(source=result.source, source_tokens=result.source_tokens,
                     generations=[_generation_out(g, with_attention) for g in result.generations])


def _generation_out(generation: Generation, with_attention: bool) -> GenerationOut:
    attention = None
    if with_attention and generation.attention is not None:
        # [T, S]; float64 first so that 4 decimals stay 4 decimals in the JSON
        weights = generation.attention.double().round(decimals=4).tolist()
        heads = None if generation.heads is None else generation.heads.double().round(decimals=4).tolist()
        attention = Attention(source_tokens=generation.source_tokens, output_tokens=attention_rows(generation), weights=weights,
                              heads=heads)
    return GenerationOut(text=generation.text, tokens=generation.tokens, score=generation.score,
                         normalized_score=generation.normalized_score, parses=generation.parses,
                         finished=generation.finished, attention=attention)


def _add_page_routes(app: FastAPI) -> None:
    """The page and its assets, read from the package once; the URL only selects among them."""
    folder = resources.files("seq2seq.serving") / "static"
    assets = {item.name: (item.read_bytes(), ASSET_TYPES[Path(item.name).suffix])
              for item in folder.iterdir() if Path(item.name).suffix in ASSET_TYPES}

    def asset(name: str) -> Response:
        if name not in assets:
            raise ApiError(404, f"no asset {name!r}; this server has {', '.join(sorted(assets))}")
        content, media_type = assets[name]
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    def index() -> Response:
        return asset("index.html")

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/{name}", asset, methods=["GET"], include_in_schema=False)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return ApiError(error.status_code, str(error.detail), headers=error.headers).response()

    @app.exception_handler(Exception)
    async def crashed(_: Request, error: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the client learns only that it was not its fault.
        return ApiError(500, f"internal error ({type(error).__name__}); the server log has the details").response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [FieldError(field=_field_name(item), message=_field_message(item)) for item in error.errors()]
        message = "invalid request: " + "; ".join(f"{f.field}: {f.message}" for f in fields)
        return JSONResponse(ErrorOut(error=message, fields=fields).model_dump(), 422)


def _field_message(item: dict) -> str:
    """pydantic's message, or for an option or key holding an unpaired surrogate (which pydantic
    cannot read as a string) the same message as for ``inputs``: which character, where."""
    value = item.get("input")
    if item["type"] == "string_unicode" and isinstance(value, str) and (problem := surrogate_problem(value)):
        return f"the value {problem}" if item["loc"][1:] else f"the key {value!r} {problem}"
    return escape_surrogates(item["msg"].removeprefix("Value error, "))


def _field_name(item: dict) -> str:
    """``("body", "inputs", 0)`` -> ``inputs.0``; malformed JSON -> ``body``."""
    location = [escape_surrogates(str(part)) for part in item["loc"]]  # an unknown key may hold "\ud800" too
    if item["type"] == "json_invalid" or location[1:] == []:
        return location[0] if location else "body"
    return ".".join(location[1:])


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` before it is read (413).

    A body without a Content-Length (chunked) is refused too (411), since its size is unknown
    until it has been read; HTTP clients send one for JSON bodies.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None and b"transfer-encoding" in headers:
                error = ApiError(411, "send the request body with a Content-Length header")
                return await error.response()(scope, receive, send)
            if length is not None and int(length) > self.max_bytes:
                error = ApiError(413, f"request body of {int(length)} bytes; at most {self.max_bytes}")
                return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before the server starts, so a busy port is a one-line error and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --host or --port") from None
    return sock


def uvicorn_server(app: FastAPI, *, log_level: str = "info", read_timeout_s: float = Limits.read_timeout_s) -> uvicorn.Server:
    """The server ``seq2seq serve`` runs; start it with ``.run(sockets=[bind_socket(host, port)])``.

    Each request must arrive whole within ``read_timeout_s`` (see :mod:`seq2seq.serving.connections`),
    and the process may hold as many connections as its hard limit on open files allows."""
    raise_open_file_limit()
    protocol = DeadlineH11Protocol.with_timeout(read_timeout_s)
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S, http=protocol))
