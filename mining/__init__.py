"""Model registry, encoders, embedding job, FAISS indexes, novelty, dedup, curation.

Not built yet: see the mining issue.
"""
