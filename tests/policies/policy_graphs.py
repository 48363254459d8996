"""Tiny policies as ONNX graphs, built in the test (no model file from anywhere).

- ``keep``: the current accel and steering (the state's last sample) held over the horizon;
- ``zero``: all-zero actions;
both over a float64 ``state`` of ``[accel_mps2, steering_angle_deg]``, so the predictions
are the signals' own values, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COLUMNS = ["accel_mps2", "steering_angle_deg"]
GAIN = {"keep": 1.0, "zero": 0.0, "nan": float("nan")}  # nan: a broken network


def params(
    seconds: float = 0.05, horizon_s: float = 3.0, rate_hz: float = 10.0, **more: Any
) -> dict[str, Any]:
    return {
        "inputs": {"state": {"columns": COLUMNS, "seconds": seconds}},
        "horizon_s": horizon_s,
        "rate_hz": rate_hz,
        "outputs": ["accel_mps2", "steering_angle_deg"],
        **more,
    }


def graph(
    kind: str,
    history: int = 1,
    points: int = 30,
    dtype: int = TensorProto.DOUBLE,
    input_name: str = "state",
    output_name: str = "actions",
    batch: str | int = "N",
    external: bool = False,
) -> bytes:
    """``state [N, history, 2] -> actions [N, points, 2]`` (the last sample tiled, times 0 for
    ``zero``)."""
    np_type = np.float64 if dtype == TensorProto.DOUBLE else np.float32
    nodes = [
        helper.make_node("Slice", [input_name, "last", "end", "axis"], ["now"]),
        helper.make_node("Mul", ["now", "gain"], ["held"]),
        helper.make_node("Tile", ["held", "repeats"], [output_name]),
    ]
    g = helper.make_graph(
        nodes,
        f"{kind}_policy",
        [helper.make_tensor_value_info(input_name, dtype, [batch, history, 2])],
        [helper.make_tensor_value_info(output_name, dtype, ["N", points, 2])],
        [
            numpy_helper.from_array(np.array([history - 1], np.int64), "last"),
            numpy_helper.from_array(np.array([history], np.int64), "end"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.array(GAIN[kind], np_type), "gain"),
            numpy_helper.from_array(np.array([1, points, 1], np.int64), "repeats"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:  # the gain's data "in a file beside it": what a model given as bytes must not read
        gain = next(t for t in model.graph.initializer if t.name == "gain")
        gain.ClearField("raw_data")
        gain.ClearField("double_data")
        gain.ClearField("float_data")
        gain.data_location = TensorProto.EXTERNAL
        gain.external_data.add(key="location", value="../../etc/passwd")
        return bytes(model.SerializeToString())
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
