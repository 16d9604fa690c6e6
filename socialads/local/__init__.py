"""Local servers: each declared once (servers), run by one supervisor (supervisor), composed
into the native stack (stack) and the embedded default's Prefect server (embedded).

Nothing here imports Prefect, FastAPI or Typer: the servers are subprocesses with explicit
environments.
"""
