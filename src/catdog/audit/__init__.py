"""The data audit: each image of the split embedded by the frozen ImageNet MobileNetV2 (cached like the decoded
images), then checked for likely label errors, outliers and near-duplicates by cleanlab and for the same photo stored
twice by perceptual hash; a pair in two splits is leakage. It writes findings, never data: a file leaves the study
only through `data.exclude` in params.yaml, which the split applies. Imports `catdog.data`, `catdog.common` and
`catdog.settings`."""
