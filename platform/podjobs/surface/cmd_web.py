"""`podjobs web`: serve the dashboard alone (what `podjobs api` serves under /ui).

    podjobs web --host 127.0.0.1 --port 8081 --tokens tokens.json [--zk HOSTS/ROOT] [--app MODULE]

Options as for `podjobs api` (cmd_api); operators log in with their token.
"""

from __future__ import annotations

from .cmd_api import add_server_args, cmd_api
from .options import Commands


def register(cmds: Commands) -> None:
    p = cmds.command("web", "serve the web dashboard alone (podjobs api serves it under /ui)",
                     cmd_api, description="Serve the web dashboard: pods, queues, busy, retries, "
                                          "scheduled, dead, jobs, iterations, migrations, "
                                          "tenants, periodic jobs. Log in with an operator token.")
    add_server_args(p, 8081)
    p.set_defaults(action="serve", mode="web", no_ui=False, max_body_kb=512, max_wait=30.0,
                   sync_wait=10.0, status_ttl=86400)
