"""Dataset directories, real-data sources and mixing rules."""

from autophagy.data.dataset import Dataset, DatasetError, NewShard, Shard, open_dataset, write_dataset
from autophagy.data.strategies import mix, synthetic_count

__all__ = ["Dataset", "DatasetError", "NewShard", "Shard", "open_dataset", "write_dataset", "mix", "synthetic_count"]
