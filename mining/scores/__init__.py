"""What the mining says of each clip, and what reviewers say of it.

- :mod:`~mining.scores.mine`: the ``mine`` stage, a full or incremental run;
- :mod:`~mining.scores.novelty`: a clip's knn, rarity, signal rarity and novelty;
- :mod:`~mining.scores.dedup`: near-duplicate groups;
- :mod:`~mining.scores.rescore`: the old clips an incremental run re-scores;
- :mod:`~mining.scores.mining_model`: the fit a full run keeps;
- :mod:`~mining.scores.lineage`: which rows hold a version's current scores;
- :mod:`~mining.scores.reviews`, :mod:`~mining.scores.browse`: reviewers' verdicts, the
  review grid;
- :mod:`~mining.scores.evaluation`: ``eval-mining`` on a synthetic fleet.

Imports :mod:`mining.search` and :mod:`mining.encoders`; importing this package loads nothing.
"""

__all__: list[str] = []
