"""Driving policies run beside the driver ("shadow mode"): where the model would have done
something other than what the human did.

- :mod:`.contract`: a policy's I/O contract (inputs, horizon, outputs), checked against its ONNX graph;
- :mod:`.registry`: immutable versions (``policies`` table), the file kept in the lake;
- :mod:`.shadow`: a clip's predicted actions against the logged ones (``policy_errors``);
- :mod:`.baseline`: a ridge-regression policy fitted on the lake itself, written as ONNX;
- :mod:`.evaluation`: open-loop evaluation per event type, two versions side by side.
"""
