"""minisd."""
