"""One module per command-line tool: `main(argv) -> int`."""
