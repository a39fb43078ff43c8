"""Exporters: each turns closed scopes into one kind of output, and is the only importer of
its library."""
