"""The web pages' parts: HTML rendering (:mod:`api.ui.render`), the signal plot's data
(:mod:`api.ui.plot`) and the static script and style under ``static/`` (plain JS and
CSS, no build step, nothing fetched from elsewhere). Routes live in :mod:`api.routes.ui`."""
