"""MLflow, where results are published: reaching the store (`connect`), what ties a run to its code, data and
machine (`provenance`), and logged models and the registry's aliases (`registry`). Stages write here; none reads
its results back from here. Imports `catdog.common` and `catdog.settings`."""
