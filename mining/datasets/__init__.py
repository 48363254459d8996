"""Datasets: versions of a query's clips, and what a trainer reads of them.

- :mod:`~mining.datasets.curation`: the query (:class:`~mining.datasets.curation.DatasetQuery`)
  and its immutable versions;
- :mod:`~mining.datasets.members`: a version's clips, selected a span of days at a time;
- :mod:`~mining.datasets.shards`: a version as WebDataset shards and a wids manifest;
- :mod:`~mining.datasets.lerobot`: a version as a LeRobotDataset v3.0 tree;
- :mod:`~mining.datasets.media`: frame times and remuxed videos of a clip's mp4.

The top room: imports :mod:`mining.scores`, :mod:`mining.search` and
:mod:`mining.encoders`; importing this package loads nothing.
"""

__all__: list[str] = []
