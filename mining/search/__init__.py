"""Searching a model version's vectors: FAISS indexes and the queries served on them.

- :mod:`~mining.search.index`: one FAISS index and its clip ids, saved and mapped;
- :mod:`~mining.search.index_build`: an index built from a vector source in bounded memory;
- :mod:`~mining.search.serving`: a process's live index per lake and model version;
- :mod:`~mining.search.queries`: similar clips and corner cases, as the CLI and API ask;
- :mod:`~mining.search.by_example`: the clips whose frames look like one uploaded image
  (its decodes bounded by :mod:`~mining.search.decode_slots`);
- :mod:`~mining.search.ready`: the corner-case lists ``mine`` keeps ready.

Imports :mod:`mining.encoders` only; importing this package loads nothing.
"""

__all__: list[str] = []
