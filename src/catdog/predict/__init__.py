"""Labelling image files with a trained classifier (`python src/predict.py`): which model a `model=` names and how
it is loaded (`loading`), and the files read, labelled in batches and written out (`label_files`). A top layer,
beside `report`: nothing in the study's stages imports it, so changing it reruns no stage."""
