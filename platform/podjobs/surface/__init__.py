"""podjobs.surface: what people and other programs touch, the command line and HTTP.

The top layer (above the scheduler, pods, iteration and infra; see pyproject's
[tool.importlinter]): it may import every package, none imports it. One naming scheme:

    cmd_<group>.py   the commands of `podjobs <group>`, each with `register(cmds)`:
        cmd_queues       queues, workers, stats, dead, scheduled, retries, job (every pod, or --pod)
        cmd_worker       worker (plain, or a pod's worker with the migration job)
        cmd_pods         pods list|add|set-state, fleet
        cmd_tenants      tenants assign|where|list
        cmd_moves        tenants move (joins the tenants group)
        cmd_dev          dev up|status|down (a local cluster)
        cmd_scheduler    scheduler, scheduler status
        cmd_migrations   migrations status|wait|retry|cancel|skip
        cmd_iterations   iterations list|show|pause|resume|cancel
        cmd_api          api (serve the HTTP API), api token
    options.py       the registration point (`Commands`, each command with its --json noun)
                     and the shared options (which pods or Redis, which ZooKeeper, --app,
                     --json, --yes)
    schema.py        the --json contract: one schema per noun, ISO 8601 UTC times (pure)
    api/             the HTTP API (FastAPI), served by cmd_api; it imports no command
                     module (import-linter contract "http")

The program itself, `podjobs` = `python -m podjobs.cli`, is podjobs/cli.py: it lists
the command modules (its `COMMANDS`) and runs the chosen command.
"""
