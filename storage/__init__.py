"""Storage: Parquet shards written atomically, run manifests, a DuckDB catalog of views, rejects.

Imports none of the other tracemill packages: it speaks Arrow and SQL only.

- ``shards.ShardWriter`` commits named shards exactly once (``committed_shards`` tells a resume what to skip);
- ``catalog.Catalog`` gives SQL over every committed file, returning Arrow tables;
- ``runs`` keeps each run's one ``runs`` row (running -> finished | failed);
- ``rejects`` builds reject rows; ``tables.conform`` casts rows to ``schemas.TABLES``;
- ``layout`` says where every file lives; ``manifest`` is the list of committed shards readers trust.
"""
