"""A pulled study logged into the current tracking store (`study`): its training runs, models and compare run from
the study's files, once, so a teammate browses it in their own MLflow UI. A top layer, beside `report` and
`predict`; no stage runs it."""
