#!/usr/bin/env python3
"""Waits until a gateway reports SERVING on grpc.health.v1.Health, then stops it.

    health_wait.py PID ADDRESS UID TIMEOUT_SECONDS [CA CERT KEY]

PID is the process the caller started (the gateway itself, or sudo in
front of it), ADDRESS the gateway's gRPC listener (127.0.0.1:PORT). Checks
the service flowgate.v1.WorkflowGateway and the server ("") as the
Deployment's probes do, requires the gateway process to run as UID, then
sends PID SIGTERM and requires it to exit within 10s. Exit status 0 only if
all of that happened. With CA CERT KEY the listener speaks (m)TLS: the
server certificate must chain to CA for the name `flowgate`, and the client
presents CERT.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by our parent shell) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def uid_of(pid: int) -> str:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Uid:"):
                return line.split()[1]
    return "?"


def gateway_process(pid: int) -> int:
    """pid, or the descendant of pid named flowgate (behind sudo)."""
    family, found = {pid}, True
    while found:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in family and int(entry) not in family:
                family.add(int(entry))
                found = True
    for member in sorted(family):
        try:
            with open(f"/proc/{member}/comm") as comm:
                if comm.read().strip() == "flowgate":
                    return member
        except OSError:
            continue
    return pid


def main(argv: list[str]) -> int:
    pid, address, want_uid = int(argv[0]), argv[1], argv[2]
    timeout = float(argv[3])
    deadline = time.monotonic() + timeout
    if len(argv) > 4:
        ca, cert, key = (open(path, "rb").read() for path in argv[4:7])
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "flowgate")])
    else:
        channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"the gateway (pid {pid}) exited before reporting SERVING")
            return 1
        # A fresh answer each round: an earlier error must not outlive it.
        statuses = {}
        try:
            for service in ("flowgate.v1.WorkflowGateway", ""):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            if all(status == "SERVING" for status in statuses.values()):
                break
        except grpc.RpcError as err:
            statuses = {"error": err.code().name}
        time.sleep(0.2)
    else:
        print(f"no SERVING within {timeout:g}s: {statuses}")
        # The caller waits for the gateway: never leave it running.
        os.kill(pid, signal.SIGKILL)
        return 1
    channel.close()
    uid = uid_of(gateway_process(pid))
    print(f"SERVING on {address} (health {statuses}), uid {uid}")
    if uid != want_uid:
        print(f"the gateway runs as uid {uid}, not {want_uid}")
        os.kill(pid, signal.SIGKILL)
        return 1

    os.kill(pid, signal.SIGTERM)
    stop = time.monotonic() + 10
    while alive(pid) and time.monotonic() < stop:
        time.sleep(0.1)
    if alive(pid):
        print("still running 10s after SIGTERM")
        return 1
    print("stopped on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
