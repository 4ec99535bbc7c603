"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas by default.

    with RedisCluster() as cluster:
        client = redis.RedisCluster(startup_nodes=cluster.startup_nodes())
        dead = cluster.kill_master(slot)               # kill -9 of the slot's master
        seconds = cluster.wait_failover(slot, dead)    # until a replica took its slots over
        cluster.restart(dead)                          # back, as a replica

Theory of operation
-------------------
``start()`` runs ``masters * (1 + replicas)`` ``redis-server --cluster-enabled yes``
processes (no persistence; a small ``cluster-node-timeout``, 500 ms unless
told; ``cluster-require-full-coverage no`` unless told, so that losing one
master's slots stops only those; ``repl-diskless-sync-delay 0``, because a
replica that never synced cannot fail over), joins them with ``redis-cli
--cluster create ... --cluster-replicas N --cluster-yes`` and waits, with a
deadline, until every node says ``cluster_state:ok``, all of them agree on who
owns every slot (``agreed``) and every replica's link to its master is up
(``replicated``). ``started_in`` keeps the seconds it took.

Ports: a node listens on ``port`` and its cluster bus on ``port + 10000``. Both
stay below the kernel's ephemeral range (32768 and up here), where an outgoing
connection may hold a port: the base port is chosen in ``BASE_PORTS`` (below
22768), at random among blocks whose ports and bus ports are all free now, and
another block is tried when a node still finds its port taken (another test
got there first).

Each node keeps its files (``nodes-<port>.conf``, its log) in a directory of
its own under one temporary directory. ``stop()``, which leaving the ``with``
calls whatever happened in it (and ``start()`` when it fails), SIGKILLs every
process, waits for them and removes the directory; a cluster not stopped is
stopped when the Python process exits.

Faults: ``kill(port)`` and ``kill_master(slot)`` (SIGKILL), ``wait_failover(slot,
dead)`` (until a replica owns the slot and every live node agrees), ``restart(port)``
(the same node, on its files: it rejoins, as a replica once it lost its slots),
``freeze(port)``/``thaw(port)`` (SIGSTOP/SIGCONT). Every wait polls a condition
with a deadline; nothing needs a sleep to pass.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from sse_fast.brokers.redis._partitions import SLOTS, key_slot
from sse_fast.testing import HOST

from .waiting import until

__all__ = ["BASE_PORTS", "RedisCluster"]

#: where a cluster's base port is chosen: its nodes' cluster bus ports (port + 10000) stay below
#: the ephemeral range (32768 and up), whose ports outgoing connections may hold
BASE_PORTS = range(20000, 22768)
_BUS = 10000  # a node's cluster bus port is its port plus this
_RUNNING: weakref.WeakSet[RedisCluster] = weakref.WeakSet()


@atexit.register
def _stop_left() -> None:
    for cluster in list(_RUNNING):
        cluster.stop()


class _PortTaken(RuntimeError):
    """A node could not listen on its port (or bus port): another process took it."""


def _free(port: int) -> bool:
    """Whether nothing listens on (or holds) ``HOST:port`` now."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class RedisCluster:
    """A real Redis Cluster of ``masters`` masters with ``replicas`` replicas each on loopback
    (the module's docstring says how). ``base_port=0`` chooses free ports below 22768."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        base_port: int = 0,
        node_timeout_ms: int = 500,
        full_coverage: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError(f"masters={masters}: a Redis Cluster needs at least 3 masters")
        self.masters, self.replicas = masters, replicas
        self.count = masters * (1 + replicas)
        self.base_port = base_port
        self.node_timeout_ms = node_timeout_ms
        self.full_coverage = full_coverage
        #: (certificate, key) PEM files: every node speaks TLS only (clients, the bus,
        #: replication), the certificate being its own CA
        self.tls = tls
        self.directory = ""
        self.started_in = 0.0
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    # ------------------------------------------------------------ addresses

    @property
    def ports(self) -> list[int]:
        """Every node's port, masters first (as ``--cluster create`` was given them)."""
        return [self.base_port + i for i in range(self.count)] if self.base_port else []

    @property
    def seeds(self) -> list[tuple[str, int]]:
        """Seed addresses (host, port): the first three nodes."""
        return [(HOST, port) for port in self.ports[:3]]

    @property
    def url(self) -> str:
        """The seeds as a ``redis-cluster://host:port,host:port,...`` URL (issue 42's form;
        ``rediss-cluster://...?ssl_ca_certs=<certificate>`` with TLS)."""
        seeds = ",".join(f"{host}:{port}" for host, port in self.seeds)
        if self.tls:
            return f"rediss-cluster://{seeds}?ssl_ca_certs={self.tls[0]}"
        return "redis-cluster://" + seeds

    def startup_nodes(self) -> list[ClusterNode]:
        """The seeds, for ``redis.RedisCluster(startup_nodes=...)``."""
        return [ClusterNode(host, port) for host, port in self.seeds]  # type: ignore[no-untyped-call]

    def node(self, port: int) -> redis.Redis:
        """A plain client of node ``port`` (kept; it fails fast: 1 s timeouts, no retries)."""
        if port not in self._clients:
            tls = {"ssl": True, "ssl_ca_certs": self.tls[0]} if self.tls else {}
            self._clients[port] = redis.Redis(
                host=HOST,
                port=port,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
                **tls,  # type: ignore[arg-type]
            )
        return self._clients[port]

    # ------------------------------------------------------------ starting and stopping

    def _choose_ports(self, rng: random.Random, tried: set[int]) -> None:
        bases = [b for b in range(BASE_PORTS.start, BASE_PORTS.stop - self.count, 16)]
        rng.shuffle(bases)
        for base in bases:
            if base in tried:
                continue
            tried.add(base)
            if all(_free(p) and _free(p + _BUS) for p in range(base, base + self.count)):
                self.base_port = base
                return
        raise RuntimeError(f"no {self.count} free ports (and bus ports) below {BASE_PORTS.stop}")

    def _spawn(self, port: int) -> None:
        directory = os.path.join(self.directory, str(port))
        os.makedirs(directory, exist_ok=True)
        args = [
            "redis-server", "--port", str(port), "--bind", HOST, "--dir", directory,
            "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.full_coverage else "no",
            "--repl-diskless-sync-delay", "0", "--save", "", "--appendonly", "no",
            "--logfile", os.path.join(directory, "redis.log"),
        ]  # fmt: skip
        if self.tls:  # TLS only: the port is the TLS port, the plain one is off
            cert, key = self.tls
            args[1:3] = ["--port", "0", "--tls-port", str(port)]
            args += ["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-cert-file", cert,
                     "--tls-key-file", key, "--tls-ca-cert-file", cert,
                     "--tls-auth-clients", "no"]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _answers(self, port: int) -> bool:
        if self.processes[port].poll() is not None:
            raise _PortTaken(f"redis-server on port {port} exited at start: see its log")
        try:
            return bool(self.node(port).ping())
        except (redis.RedisError, AttributeError):
            # redis-py 8.1 can fail its handshake with AttributeError ('list' object has no
            # attribute 'get') against a server still starting
            return False

    def _all_answer(self) -> bool:
        return all([self._answers(port) for port in self.ports])  # each: the exits are seen

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start the nodes, create the cluster, wait until it is ok, agreed and replicated
        (``AssertionError`` past ``timeout`` seconds, everything stopped then)."""
        began = time.monotonic()
        explicit, tried = bool(self.base_port), set[int]()
        rng = random.Random(os.getpid() ^ time.monotonic_ns())
        _RUNNING.add(self)
        try:
            for attempt in range(1 if explicit else 5):
                if not explicit:
                    self._choose_ports(rng, tried)
                elif not all(_free(p) and _free(p + _BUS) for p in self.ports):
                    raise RuntimeError(f"ports {self.ports} (or +{_BUS}) are in use: give another "
                                       "base_port, or 0 to have free ones chosen")  # fmt: skip
                self.directory = tempfile.mkdtemp(prefix="sse-fast-cluster-")
                for port in self.ports:
                    self._spawn(port)
                try:
                    until(
                        self._all_answer,
                        began + timeout - time.monotonic(),
                        "every redis-server to answer",
                    )
                    break
                except _PortTaken:
                    if explicit or attempt == 4:
                        raise
                    self._kill_all()
            self._create(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _create(self, deadline: float) -> None:
        create = ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports)]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        if self.tls:
            create += ["--tls", "--cacert", self.tls[0]]
        done = subprocess.run(
            create, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic())
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        until(
            self.agreed,
            deadline - time.monotonic(),
            "every node to say cluster_state:ok, with one slot map",
        )
        until(
            self.replicated,
            deadline - time.monotonic(),
            "every replica's link to its master to be up",
        )

    def _kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.processes.clear()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    def stop(self) -> None:
        """SIGKILL every node, wait for them, remove their files."""
        self._kill_all()
        _RUNNING.discard(self)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the topology

    def live_ports(self) -> list[int]:
        """The ports of the nodes whose process runs."""
        return [port for port, process in self.processes.items() if process.poll() is None]

    def slot_map(self, port: int | None = None) -> list[tuple[int, int, int]]:
        """``(first slot, last slot, master port)`` for each range, sorted, as node ``port`` (a
        live one by default) sees it (``CLUSTER SLOTS``)."""
        client = self.node(self.live_ports()[0] if port is None else port)
        ranges = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        return sorted((first, last, int(master[1])) for first, last, master, *_ in ranges)

    def master_of(self, slot_or_key: int | str) -> int:
        """The port of the master that owns a slot, or a key's slot."""
        slot = key_slot(slot_or_key) if isinstance(slot_or_key, str) else slot_or_key
        for first, last, master in self.slot_map():
            if first <= slot <= last:
                return master
        raise LookupError(f"no master owns slot {slot}")

    def primaries(self) -> list[int]:
        """The ports of the masters that own slots."""
        return sorted({master for _, _, master in self.slot_map()})

    def replicas_of(self, master: int) -> list[int]:
        """The ports of the live nodes replicating ``master`` (``INFO replication``)."""
        return [
            port
            for port in self.live_ports()
            if self.node(port).info("replication").get("master_port") == master
        ]

    def agreed(self) -> bool:
        """Every live node says ``cluster_state:ok`` and they agree on every slot's master."""
        maps = []
        for port in self.live_ports():
            try:
                info = self.node(port).execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
                if info["cluster_state"] != "ok":
                    return False
                owners = self.slot_map(port)
            except (redis.RedisError, AttributeError):
                return False
            if sum(last - first + 1 for first, last, _ in owners) != SLOTS:
                return False
            maps.append(owners)
        return bool(maps) and all(owners == maps[0] for owners in maps)

    def replicated(self) -> bool:
        """Every live replica's link to its master is up, and none is missing but the dead."""
        up = 0
        for port in self.live_ports():
            try:
                info = self.node(port).info("replication")
            except (redis.RedisError, AttributeError):
                return False
            if info.get("role") == "slave":
                if info.get("master_link_status") != "up":
                    return False
                up += 1
        return up >= self.masters * self.replicas - (self.count - len(self.live_ports()))

    # ------------------------------------------------------------ faults

    def kill(self, port: int) -> None:
        """SIGKILL node ``port`` (kill -9) and wait for it to exit."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        client = self._clients.pop(port, None)
        if client is not None:
            client.close()

    def kill_master(self, slot_or_key: int | str) -> int:
        """SIGKILL the master owning a slot (or a key's slot); its port."""
        port = self.master_of(slot_or_key)
        self.kill(port)
        return port

    def wait_failover(self, slot_or_key: int | str, dead: int, timeout: float = 15.0) -> float:
        """Seconds until a node other than ``dead`` owns the slot and every live node agrees
        (``AssertionError`` past ``timeout``)."""
        began = time.monotonic()

        def promoted() -> bool:
            try:
                return self.agreed() and self.master_of(slot_or_key) != dead
            except (redis.RedisError, AttributeError, LookupError):
                return False

        until(
            promoted,
            began + timeout - time.monotonic(),
            f"a replica to take over from the master on {dead}",
        )
        return time.monotonic() - began

    def restart(self, port: int, timeout: float = 15.0) -> float:
        """Start node ``port`` again on its files; seconds until it answers, the cluster agrees
        and every replica (it too, when it came back as one) is in sync."""
        began = time.monotonic()
        self._spawn(port)
        until(lambda: self._answers(port), timeout, f"redis-server on {port}")
        until(self.agreed, began + timeout - time.monotonic(), "the cluster to agree again")
        until(
            self.replicated, began + timeout - time.monotonic(), "every replica to be in sync again"
        )
        return time.monotonic() - began

    def move_slot(self, slot: int, to: int, timeout: float = 15.0) -> int:
        """Move ``slot`` (and its keys) from its master to master ``to``, as ``redis-cli
        --cluster reshard`` does (IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE on every
        master); the port it left. Waits until every node agrees."""
        source = self.master_of(slot)
        if source == to:
            raise ValueError(f"slot {slot} is on {to} already")
        a, b = self.node(source), self.node(to)
        a_id, b_id = a.execute_command("CLUSTER MYID"), b.execute_command("CLUSTER MYID")  # type: ignore[no-untyped-call]
        b.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", a_id)  # type: ignore[no-untyped-call]
        a.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", b_id)  # type: ignore[no-untyped-call]
        while keys := a.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):  # type: ignore[no-untyped-call]
            a.execute_command("MIGRATE", HOST, to, "", 0, 5000, "KEYS", *keys)  # type: ignore[no-untyped-call]
        for port in self.primaries():
            self.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", b_id)  # type: ignore[no-untyped-call]
        began = time.monotonic()
        until(
            lambda: self.agreed() and self.master_of(slot) == to,
            began + timeout - time.monotonic(),
            f"every node to agree that slot {slot} is on {to}",
        )
        return source

    def freeze(self, port: int) -> None:
        """SIGSTOP node ``port``: to the others and to clients, a node that stopped answering."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def thaw(self, port: int) -> None:
        """SIGCONT a frozen node."""
        self.processes[port].send_signal(signal.SIGCONT)
