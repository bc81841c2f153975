"""The training engine below a run: batches from the cache (`loader`), the training loop and prediction
(`train`), verified checkpoints (`checkpoint`) and DistributedDataParallel (`distributed`). It knows nothing
of run folders, records or boards."""
