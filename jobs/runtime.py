"""Local vs cluster Ray: the same job code, ``--address`` picks where it runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["init_ray", "project_modules"]


SHIPPED_EXCLUDES = ["__pycache__"]
"""Left out of the shipped packages (a runtime env's ``excludes``): bytecode caches, which
the cluster's Python makes for itself."""


def project_modules() -> list[str]:
    """The project's package directories, as a runtime env's ``py_modules``.

    Paths, not module objects: a job submission serialises its runtime env, and a
    driver inside a submitted job deep-copies it, and neither can pickle a module.
    """
    from importlib.util import find_spec

    # Found, not imported: jobs sits below api and the CLI, and must not import them.
    packages = ("ingest", "mining", "storage", "api", "jobs", "fleetmine", "fleetmine_scenarios")
    return [str(Path(str(_spec_origin(find_spec(name), name))).parent) for name in packages]


def _spec_origin(spec: Any, name: str) -> str:
    if spec is None or not spec.origin:
        raise RuntimeError(f"package {name} is not importable here")
    return str(spec.origin)


def init_ray(address: str | None, **kwargs: Any) -> Any:
    """Connect to ``address`` (a cluster) or start a local Ray sized to this machine.

    Ray is imported here, never at module import, so ``api`` and the light CLI
    commands start fast and never pull Ray in.
    """
    if not address and "ray" not in sys.modules:
        # Ray turns token auth on for a new local cluster anyway, and says so on every
        # command unless the mode is set. Set before Ray loads its config, the private
        # Ray is as it was, without the warning.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
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
    # Inside a submitted Ray job the job's runtime env already carries the code (and a
    # driver's own runtime env would conflict with it).
    in_submitted_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    if address and not in_submitted_job and os.environ.get("FLEETMINE_SHIP_CODE", "1") == "1":
        # A cluster's workers may not have fleetmine installed: ship the packages.
        opts["runtime_env"] = {"py_modules": project_modules(), "excludes": SHIPPED_EXCLUDES}
    opts.update(kwargs)
    ray.init(**opts)
    return ray
