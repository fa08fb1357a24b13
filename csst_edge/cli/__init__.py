"""Typer command-line interface. Commands are thin: parse options, call the library, print."""
