"""The `corral` command line: Typer commands over the blocking client, rich tables on top.

Talks to the server only through corral.client; `corral serve` is the one door into the daemon.
"""
