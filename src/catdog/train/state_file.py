"""The file in which a run's checkpoints keep its per-epoch state (catdog.train.checkpoints writes it). Apart from the
checkpoints, which need Keras: a search reads it to watch its seeds train without importing TensorFlow."""

STATE_FILE = "state.json"
