"""podjobs.scheduler: leader election, migrations as jobs, periodic jobs (see issue 6)."""
