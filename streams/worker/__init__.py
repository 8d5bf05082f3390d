"""The fold worker (docs/design.md, "Fold worker"): Faust keeps the state (its consumer group
assigns the tables' partitions; RocksDB stores, changelogs, recovery), a batch reader owns the
source topics and checkpoints what the streams fold.

- :mod:`.app`: the Faust app, the tables and the streams, and the worker process;
- :mod:`.reader`: the batch reader and the stream interface (:class:`.reader.FoldStream`);
- :mod:`.checkpoint`: the checkpoint's numbered steps;
- :mod:`.state`: a table as the reader sees it (overlay over the local store);
- :mod:`.standby`: the standby copies the assignor gives the worker, kept in batches;
- :mod:`.faust_internals`: the only module that reaches into faust-streaming's internals.
"""
