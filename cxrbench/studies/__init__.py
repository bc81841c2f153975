"""Studies built from runs: the reference paper's (`paper`, `cxrbench reproduce paper`) and the quickstart's
phantom pipeline (`quickstart`)."""
