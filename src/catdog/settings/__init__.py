"""The study's settings: the config checks (`checks`), where the project and its params.yaml are (`project`), the
`${params:...}` resolver and config composition (`params`), and the wrapper of the Hydra entry points
(`hydra_app`). Imports only `catdog.common`; nothing here imports TensorFlow, so a bad setting fails in a second."""
