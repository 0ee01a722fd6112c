"""Data: prepare text into token memmaps (prepare, corpus), open them (meta), serve sequences (dataset)."""
