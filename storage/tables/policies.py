"""``policies``: the driving-policy registry. Rows are immutable; a new file is a new version.

A policy is an ONNX network that maps what the car saw and did (keyframes, the last
seconds of named signals) to the actions it would take over a horizon; ``params``
holds its I/O contract (:class:`mining.policies.contract.PolicyParams`). The file is
copied into the lake at registration (``uri``, named by its ``sha256``), so a version
keeps meaning the same weights whatever happens to the file it came from.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="policies",
    keys=("name", "version"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("sha256", pa.string()),
            pa.field("params", pa.string()),  # the I/O contract, JSON, every default filled in
            pa.field("source", pa.string()),  # where the file came from (a path, or "baseline: ...")
            pa.field("created_at", UTC_TS),
        ]
    ),
    description="driving policies: ONNX file in the lake, I/O contract (inputs, horizon, outputs)",
)
