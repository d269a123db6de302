"""What every stage shares and nothing in it depends on: the one error path (`errors`), atomic file writes and
content hashes (`files`), matplotlib figures (`plots`), and the machine a run ran on (`machine`). Imports no other
catdog subpackage."""
