"""``onnx``: any image encoder exported to ONNX, run with onnxruntime.

Registry params: ``input_size`` [H, W], ``mean`` and ``std`` (per channel, on
0..1 pixels), ``layout`` "NCHW" (default) or "NHWC". Each keyframe is encoded;
the clip's vector is the mean over its keyframes, L2-normalised.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mining.encoders.params import OnnxParams
from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError

__all__ = ["OnnxEncoder"]


class OnnxEncoder:
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, spec: ModelSpec, storage_options: dict[str, str] | None = None):
        self.spec = spec
        self.storage_options = storage_options or {}
        self.params = OnnxParams.model_validate(spec.params)
        self.session: Any = None

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
        self.session = ort.InferenceSession(model, providers=providers)

    def _pixels(self, jpeg: bytes) -> np.ndarray:
        p = self.params
        h, w = p.input_size
        img = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((int(w), int(h)), Image.Resampling.BILINEAR)
        x: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - np.array(p.mean, np.float32)) / np.array(p.std, np.float32)
        return x if p.layout == "NHWC" else x.transpose(2, 0, 1)

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        if self.session is None:
            self.setup()
        owners: list[int] = []
        pixels: list[np.ndarray] = []
        for i, c in enumerate(clips):
            for j in c.jpegs:
                owners.append(i)
                pixels.append(self._pixels(j))
        out = np.zeros((len(clips), self.spec.dim), np.float32)
        if pixels:
            name = self.session.get_inputs()[0].name
            emb = np.asarray(self.session.run(None, {name: np.stack(pixels)})[0], np.float32).reshape(
                len(pixels), -1
            )
            if emb.shape[1] != self.spec.dim:
                raise ConfigError(
                    f"model {self.spec.ref} gives {emb.shape[1]}-d vectors, registered dim {self.spec.dim}"
                )
            idx = np.array(owners)
            for i in range(len(clips)):
                if (idx == i).any():
                    out[i] = emb[idx == i].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(norms > 0, out / np.maximum(norms, 1e-12), out)
