"""The FastAPI catalog: routes per resource, auth, manifests, shard serving, web UI.

Not built yet: see the catalog API issue. Importing ``api`` must never import Ray.
"""
