"""``onnx``: any image encoder exported to ONNX, run with onnxruntime.

Registry params (:class:`~mining.encoders.params.OnnxParams`): ``input_size`` [H, W],
``mean`` and ``std`` (per channel, on 0..1 pixels), ``layout`` "NCHW" (default) or
"NHWC", ``output`` (the frame-feature output; default the first). Each keyframe is
encoded to a frame feature. With ``clip`` params the clip's vector is fused like
every encoder's (:func:`mining.encoders.fusion.fuse`: the frames' mean, their mean
change, the signals block, each weighted); without, it is the mean of the frames'
features (the vectors of versions registered before clip fusion existed). Rows
are L2-normalised.

A worker runs the model on as many threads as CPUs it asked Ray for, so workers
sharing a node do not oversubscribe it.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mining.encoders.fusion import DENSE_DIM, SIGNAL_DIM, dense_motion, fuse, signal_block, signal_layout
from mining.encoders.kinds import EncoderKind, Layout
from mining.encoders.params import OnnxParams
from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError

__all__ = ["KIND", "OnnxEncoder", "device_resources"]

_FRAMES_PER_RUN = 16  # bounds the activations held at once (a 224 px CNN: several MB a frame)


class OnnxEncoder:
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, spec: ModelSpec, storage_options: dict[str, str] | None = None):
        self.spec = spec
        self.storage_options = storage_options or {}
        self.params = OnnxParams.model_validate(spec.params)
        self._layout = signal_layout(self.params.clip.signal_layout) if self.params.clip else None
        self.session: Any = None
        self._output: str | None = None

    def setup(self) -> None:
        import onnxruntime as ort

        from storage.objectstore import Location

        if not self.spec.uri:
            raise ConfigError(f"model {self.spec.ref} has no uri")
        loc = Location(self.spec.uri, self.storage_options)
        model = loc.fs.cat_file(loc.path)
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(device_resources(self.spec)["num_cpus"]))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=providers)
        outputs = [o.name for o in self.session.get_outputs()]
        if self.params.output is not None and self.params.output not in outputs:
            raise ConfigError(
                f"model {self.spec.ref} has no output {self.params.output!r}; outputs: {outputs}"
            )
        self._output = self.params.output or outputs[0]

    def _pixels(self, jpeg: bytes) -> np.ndarray:
        p = self.params
        h, w = p.input_size
        img = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((int(w), int(h)), Image.Resampling.BILINEAR)
        x: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - np.array(p.mean, np.float32)) / np.array(p.std, np.float32)
        return x if p.layout == "NHWC" else x.transpose(2, 0, 1)

    @property
    def frame_dim(self) -> int:
        """The frame model's feature size, from the registered dim."""
        if self.params.clip is None:
            return self.spec.dim
        dense = DENSE_DIM if self.params.clip.weights.dense is not None else 0
        return (self.spec.dim - SIGNAL_DIM - dense) // 2

    def encode_frames(self, jpegs: list[bytes]) -> np.ndarray:
        """``(len(jpegs), frame_dim)`` float32: the frame model's feature of each image."""
        if self.session is None:
            self.setup()
        if not jpegs:
            return np.zeros((0, self.frame_dim), np.float32)
        name = self.session.get_inputs()[0].name
        parts = []
        for i in range(0, len(jpegs), _FRAMES_PER_RUN):
            pixels = np.stack([self._pixels(j) for j in jpegs[i : i + _FRAMES_PER_RUN]])
            out = np.asarray(self.session.run([self._output], {name: pixels})[0], np.float32)
            parts.append(out.reshape(len(pixels), -1))
        emb = np.concatenate(parts)
        if emb.shape[1] != self.frame_dim:
            want = f"2 x {emb.shape[1]} + {SIGNAL_DIM}" if self.params.clip else str(emb.shape[1])
            raise ConfigError(
                f"model {self.spec.ref} gives {emb.shape[1]}-d frame features: its dim is {want}, "
                f"registered {self.spec.dim}"
            )
        return emb

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        frames = self.encode_frames([j for c in clips for j in c.jpegs])
        out = np.zeros((len(clips), self.spec.dim), np.float32)
        start = 0
        for i, c in enumerate(clips):
            own = frames[start : start + len(c.jpegs)]
            start += len(c.jpegs)
            if self.params.clip is not None and self._layout is not None:
                sig = signal_block(c.features, self._layout)
                w = self.params.clip.weights
                dense = dense_motion(c.dense) if w.dense is not None else None
                out[i] = fuse(own, own, sig, w, dense)
            elif len(own):
                out[i] = own.mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(norms > 0, out / np.maximum(norms, 1e-12), out)


def device_resources(spec: ModelSpec) -> dict[str, float]:
    """A GPU only when the version asks for one (``params.device = "cuda"``), so a CPU
    cluster never waits for a GPU it lacks."""
    resources = {"num_cpus": 1.0}
    if spec.params.get("device") == "cuda":
        resources["num_gpus"] = 1.0
    return resources


def _layout(spec: ModelSpec) -> Layout:
    p = OnnxParams.model_validate(spec.params)
    if p.clip is None:
        return spec.dim, None
    dense = DENSE_DIM if p.clip.weights.dense is not None else 0
    return (spec.dim - SIGNAL_DIM - dense) // 2, p.clip.weights


KIND = EncoderKind("onnx", OnnxEncoder, params=OnnxParams, resources=device_resources, layout=_layout)
