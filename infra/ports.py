"""TCP ports on 127.0.0.1 for the local servers.

1. `free_port()` asks the kernel for a free port (never one in `avoid`).
2. `port_is_free(port)` / `check_port_free(port)` test a given port the way a
   server binding it would; the latter raises `PortInUse` naming the port.
3. `wait_port_closed(port)` waits until nothing listens on a port any more.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Collection

from podjobs.errors import ConfigurationError, PortInUse

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could listen on host:port now.

    Binds with SO_REUSEADDR like redis/mariadbd/ZooKeeper do, so connections in
    TIME_WAIT from an earlier run do not count as "in use", and also tries a
    connect, which catches listeners that bind with SO_REUSEPORT.
    """
    if not 0 < port < 65536:
        raise ConfigurationError(f"port {port} is out of range (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) != 0


def check_port_free(port: int, what: str = "server", host: str = HOST) -> int:
    """Return `port` if free, else raise `PortInUse` saying what to do."""
    if not port_is_free(port, host):
        raise PortInUse(
            f"port {port} on {host} (wanted for {what}) is already in use by another "
            f"process; stop that process (see 'ss -ltnp sport = :{port}'), pick another "
            f"--base-port, or leave the port out to get a free one"
        )
    return port


def free_port(avoid: Collection[int] = (), host: str = HOST, attempts: int = 50) -> int:
    """A port nothing listens on now (the kernel's pick), not in `avoid`."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid and port_is_free(port, host):
            return port
    raise PortInUse(f"found no free TCP port on {host} after {attempts} attempts")


def wait_port_closed(port: int, timeout: float = 5.0, host: str = HOST) -> bool:
    """Wait until nothing accepts connections on host:port; True if it closed in time."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) != 0:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
