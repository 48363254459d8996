"""Local vs cluster Ray: the same job code, ``--address`` picks where it runs."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["init_ray"]


def init_ray(address: str | None, **kwargs: Any) -> Any:
    """Connect to ``address`` (a cluster) or start a local Ray sized to this machine.

    Ray is imported here, never at module import, so ``api`` and the light CLI
    commands start fast and never pull Ray in.
    """
    import ray

    if ray.is_initialized():
        return ray
    # The project's packages must reach workers on a cluster without a shared venv.
    opts: dict[str, Any] = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "logging_level": "WARNING",
        "log_to_driver": os.environ.get("FLEETMINE_RAY_LOGS", "0") == "1",
    }
    # No address: a private local Ray, never "the latest cluster on this host" that
    # ray.init would otherwise join (another user's `ray start`, with its own code).
    opts["address"] = address or "local"
    if address and os.environ.get("FLEETMINE_SHIP_CODE", "1") == "1":
        # A cluster's workers may not have fleetmine installed: ship the packages.
        import api
        import ingest
        import jobs
        import mining
        import storage

        opts["runtime_env"] = {"py_modules": [ingest, mining, storage, api, jobs]}
    opts.update(kwargs)
    ray.init(**opts)
    return ray
