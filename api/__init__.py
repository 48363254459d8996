"""The FastAPI catalog: routes per resource, auth, manifests, shard serving, web UI.

:func:`create_app` builds the app over a :class:`~storage.config.Settings`. A
resource is ``api/routes/<resource>.py`` (an ``APIRouter`` with its ``*Public``
models), included in ``api.app``; ``api/deps.py`` holds the lake and caller
dependencies. Routes raise ``storage.errors`` exceptions (or ``HTTPException`` for
HTTP-only cases); ``api.app`` maps each branch of the tree to its status in one
place, as ``{"error": {"code", "message"}}``.

Importing ``api`` never imports Ray: a job submitted to ``/v1/jobs`` loads it when it runs.
"""

from api.app import create_app

__all__ = ["create_app"]
