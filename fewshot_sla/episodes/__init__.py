"""Episode sampling, collation and NM-way expansion."""

from .batch import EpisodeBatch, collate_episodes, collate_expanded, expand_episodes, precompute_views
from .sampler import EpisodeSampler, class_indices

__all__ = ["EpisodeSampler", "EpisodeBatch", "class_indices", "collate_episodes", "expand_episodes",
           "precompute_views", "collate_expanded"]
