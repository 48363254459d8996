"""A policy's I/O contract: what it reads, what it predicts, checked against its ONNX file.

The contract is the registry row's ``params`` (:class:`PolicyParams`, every default filled
in). Tensors, ``N`` the steps of a clip run at once:

- ``state`` (``inputs.state.name``): ``[N, S, C]``, the last ``seconds`` of ``columns`` on the
  lake's signal grid (``S = seconds x 20`` at 20 Hz), oldest first, the step's own sample
  last; float32 or float64, whichever the graph declares (float64 keeps a signal's value
  exact, which a test of a copying policy needs); a missing value is 0.
- ``frames`` (``inputs.frames.name``): ``[N, count, 3, H, W]`` float32, the ``count`` latest
  keyframes at or before the step (``clip_frames``), resized to ``size`` and normalised by
  ``mean``/``std`` (on 0..1 pixels).
- the output ``output``: ``[N, K, A]``, ``K = horizon_s x rate_hz`` points at ``1/rate_hz``,
  ``2/rate_hz``, ... s after the step, ``A`` the ``outputs`` in order.

:func:`check_model` runs the graph once on zeros, so a file that does not keep the contract
is refused at ``fleetmine policy register`` with what differs, not in a shadow run later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.errors import ConfigError
from storage.tables.policy_errors import ACTIONS
from storage.tables.signals import SIGNAL_COLUMNS

__all__ = ["FramesInput", "Inputs", "PolicyParams", "StateInput", "check_model", "open_session"]

STATE_COLUMNS = tuple(c for c in SIGNAL_COLUMNS if c != "t_us")
"""The signals a state input may name (numeric ``signals`` columns)."""
MAX_STATE_S = 30.0
MAX_FRAMES = 8
MAX_SIDE = 1024
MAX_HORIZON_S = 10.0
MAX_MODEL_BYTES = 512 << 20
"""A policy file larger than this is refused (it is read whole into every worker)."""


MAX_FRAME_VALUES = 3 * 1024 * 1024
"""count x 3 x H x W of one step's frames tensor: 8 frames of 360 x 360, or one of 1024 x 1024."""
MAX_RUN_VALUES = 32 * 1024 * 1024
"""Float32 values fed in one run of the network (128 MB): a clip's steps go in slices of this."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StateInput(_Strict):
    columns: tuple[str, ...] = Field(min_length=1, max_length=len(STATE_COLUMNS))
    seconds: float = Field(gt=0, le=MAX_STATE_S, description="history, ending at the step's sample")
    name: str = Field(default="state", min_length=1, max_length=128, description="the ONNX input's name")

    @field_validator("columns")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [c for c in v if c not in STATE_COLUMNS]
        if bad or len(set(v)) != len(v):
            raise ValueError(
                f"state columns must be distinct signals of {list(STATE_COLUMNS)}; got {list(v)}"
            )
        return v


class FramesInput(_Strict):
    count: int = Field(default=1, ge=1, le=MAX_FRAMES)
    size: tuple[int, int] = Field(default=(64, 64), description="[H, W]")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    name: str = Field(default="frames", min_length=1, max_length=128)

    @field_validator("size")
    @classmethod
    def _bounded(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= s <= MAX_SIDE for s in v):
            raise ValueError(f"frame size sides must be 8..{MAX_SIDE}; got {list(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(s > 0 for s in v):
            raise ValueError("std must be > 0")
        return v

    @model_validator(mode="after")
    def _fits(self) -> FramesInput:
        if self.values() > MAX_FRAME_VALUES:
            raise ValueError(f"count x 3 x H x W is {self.values()}; at most {MAX_FRAME_VALUES}")
        return self

    def values(self) -> int:
        return self.count * 3 * self.size[0] * self.size[1]


class Inputs(_Strict):
    state: StateInput | None = None
    frames: FramesInput | None = None

    @model_validator(mode="after")
    def _some(self) -> Inputs:
        if self.state is None and self.frames is None:
            raise ValueError("a policy takes state, frames or both")
        if self.state is not None and self.frames is not None and self.state.name == self.frames.name:
            raise ValueError("the state and frames inputs need different names")
        return self


class PolicyParams(_Strict):
    inputs: Inputs
    horizon_s: float = Field(default=3.0, gt=0, le=MAX_HORIZON_S)
    rate_hz: float = Field(
        default=10.0, gt=0, le=1000, description="output points per second; divides the signal rate"
    )
    outputs: tuple[str, ...] = Field(default=("accel_mps2", "steering_angle_deg"), min_length=1, max_length=2)
    output: str = Field(default="actions", min_length=1, max_length=128, description="the ONNX output's name")
    step_s: float = Field(
        default=0.5, gt=0, le=MAX_HORIZON_S, description="steps through a clip this far apart"
    )
    brake_mps2: float = Field(default=-1.5, lt=0, ge=-100, description="accel at or below this is braking")
    error_scale: dict[str, float] = Field(
        default_factory=lambda: {"accel_mps2": 1.0, "steering_angle_deg": 5.0},
        description="per action, the error that counts as 1 in the disagreement score",
    )

    @field_validator("outputs")
    @classmethod
    def _actions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(a not in ACTIONS for a in v) or len(set(v)) != len(v):
            raise ValueError(f"outputs must be distinct actions of {list(ACTIONS)}; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PolicyParams:
        for a in self.outputs:
            s = self.error_scale.get(a)
            if s is None or not 1e-6 <= s <= 1e6:
                raise ValueError(f"error_scale needs a value in 1e-6..1e6 for {a}")
        if set(self.error_scale) - set(ACTIONS):
            raise ValueError(f"error_scale names actions of {list(ACTIONS)} only")
        k = self.horizon_s * self.rate_hz
        if self.rate_hz <= 0 or abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError("horizon_s x rate_hz must be a whole number of points (>= 1)")
        return self

    def points(self) -> int:
        """K: the output points per step."""
        return round(self.horizon_s * self.rate_hz)

    def every(self, signal_hz: float) -> int:
        """Signal samples between output points (the rate must divide the signal rate)."""
        m = signal_hz / self.rate_hz
        if abs(m - round(m)) > 1e-9 or round(m) < 1:
            raise ConfigError(f"rate_hz {self.rate_hz} does not divide the signal rate {signal_hz} Hz")
        return round(m)

    def history(self, signal_hz: float) -> int:
        """S: state samples per step."""
        assert self.inputs.state is not None
        return max(1, round(self.inputs.state.seconds * signal_hz))

    def steps_per_run(self) -> int:
        """Steps fed to the network at once (bounds the frames tensor's memory)."""
        f = self.inputs.frames
        return 4096 if f is None else max(1, min(4096, MAX_RUN_VALUES // f.values()))

    def step_samples(self, signal_hz: float) -> int:
        n = self.step_s * signal_hz
        if abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise ConfigError(
                f"step_s {self.step_s} is not a whole number of signal samples at {signal_hz} Hz"
            )
        return round(n)


def parse_params(params: dict[str, Any] | None) -> PolicyParams:
    """``params`` as a contract, or a :class:`ConfigError` naming what is wrong."""
    from pydantic import ValidationError

    try:
        return PolicyParams.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"policy params: {problems}") from None


def open_session(model: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types; the file is not a model it can run
        raise ConfigError(f"not an ONNX model onnxruntime can load ({type(exc).__name__})") from None


_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def input_dtype(session: Any, name: str) -> Any:
    for i in session.get_inputs():
        if i.name == name:
            return _DTYPES[i.type]
    raise ConfigError(f"the model has no input {name!r}")


def _external(graph: Any) -> bool:
    """Whether a tensor of ``graph`` (or of a subgraph) keeps its data in another file: a
    model given as bytes must not reach for files beside wherever it is run."""
    from onnx import TensorProto

    for t in graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            return True
    for node in graph.node:
        for attr in node.attribute:
            tensors = [attr.t, *attr.tensors] if attr.HasField("t") else list(attr.tensors)
            if any(t.data_location == TensorProto.EXTERNAL for t in tensors):
                return True
            if any(_external(g) for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)):
                return True
    return False


def check_file(model: bytes) -> None:
    """Refuse a file that is not an ONNX model or whose weights live in other files."""
    import onnx

    try:
        proto = onnx.load_from_string(model)
    except Exception:  # protobuf's own errors: the bytes are no model
        raise ConfigError("not an ONNX model onnxruntime can load (it does not parse)") from None
    if _external(proto.graph):
        raise ConfigError("the model keeps weights in external files; give one self-contained .onnx")


def check_model(session: Any, p: PolicyParams, signal_hz: float = 20.0) -> None:
    """Refuse a graph whose inputs, outputs or shapes differ from the contract ``p``."""
    want: dict[str, tuple[int, ...]] = {}
    if p.inputs.state is not None:
        want[p.inputs.state.name] = (p.history(signal_hz), len(p.inputs.state.columns))
    if p.inputs.frames is not None:
        f = p.inputs.frames
        want[f.name] = (f.count, 3, f.size[0], f.size[1])
    p.every(signal_hz), p.step_samples(signal_hz)
    have = {i.name: i for i in session.get_inputs()}
    if set(have) != set(want):
        raise ConfigError(f"the model's inputs are {sorted(have)}; the contract names {sorted(want)}")
    for name, dims in want.items():
        i = have[name]
        if i.type not in _DTYPES:
            raise ConfigError(f"input {name!r} is {i.type}; a policy input is float or double")
        if p.inputs.frames is not None and name == p.inputs.frames.name and i.type != "tensor(float)":
            raise ConfigError(f"input {name!r} is {i.type}; frames are float (float32)")
        shape = list(i.shape)
        if isinstance(shape[0], int):
            raise ConfigError(
                f"input {name!r} has a fixed batch size {shape[0]}; the batch axis must be free"
            )
        if len(shape) != len(dims) + 1:
            raise ConfigError(
                f"input {name!r} has shape {shape}; the contract says [N, {', '.join(map(str, dims))}]"
            )
        for got, exp in zip(shape[1:], dims, strict=True):
            if isinstance(got, int) and got != exp:
                raise ConfigError(f"input {name!r} has shape {shape}; the contract says [N, *{list(dims)}]")
    outputs = [o.name for o in session.get_outputs()]
    if p.output not in outputs:
        raise ConfigError(f"the model has no output {p.output!r}; outputs: {outputs}")
    for n in (1, 3):  # one step, and several: the batch axis is free
        feeds = {name: np.zeros((n, *dims), _DTYPES[have[name].type]) for name, dims in want.items()}
        _check_run(session, p, feeds, n)


def _check_run(session: Any, p: PolicyParams, feeds: dict[str, np.ndarray], n: int) -> None:
    try:
        out = np.asarray(session.run([p.output], feeds)[0])
    except Exception as exc:
        raise ConfigError(
            f"the model failed on inputs of the contract's shapes ({type(exc).__name__})"
        ) from None
    if out.shape != (n, p.points(), len(p.outputs)):
        raise ConfigError(
            f"output {p.output!r} has shape {list(out.shape)} for {n} steps; the contract says "
            f"[{n}, {p.points()}, {len(p.outputs)}] ({p.points()} points x {list(p.outputs)})"
        )
