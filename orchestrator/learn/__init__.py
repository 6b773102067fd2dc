"""Learning: policy/value and NNUE training, CMA-ES runs, model records (pure Python; uses play/ and nn/)."""
