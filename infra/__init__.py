"""podjobs.infra: start and stop the real servers (Redis, ZooKeeper, MariaDB) as local processes."""
