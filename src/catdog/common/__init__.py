"""What every stage shares and nothing in it depends on: the one error path (`errors`), atomic file writes and
content hashes (`files`), matplotlib figures (`plots`), the machine a run ran on (`machine`), and a console without
TensorFlow's start-up banner (`console`). Imports no other catdog subpackage."""
