"""The local stack: an AWS-API emulator server and the data plane built from ``template.yaml``.

The emulator is moto's server in its own process (inside a CPU-busy process its latency grows
several-fold). Tables and queues are created from the template's own resource properties, so the
local stack and the cloud deployment cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared import aws
from shared.settings import DEFAULT_PREFIX

TEMPLATE = Path(__file__).with_name("template.yaml")
DATA_PLANE_TYPES = ("AWS::DynamoDB::Table", "AWS::SQS::Queue")
# Properties that describe the service's management (backups, encryption at rest) rather than
# the behaviour the code relies on; the emulator has nothing to show for them.
_TABLE_PROPS_IGNORED = {
    "TableName",
    "PointInTimeRecoverySpecification",
    "SSESpecification",
    "TimeToLiveSpecification",
    "Tags",
}
_QUEUE_PROPS_IGNORED = {"QueueName", "SqsManagedSseEnabled", "KmsMasterKeyId", "Tags"}


def _cfn_constructor(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


class CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation's short tags (``!Ref``, ``!Sub``, ``!GetAtt``...)."""


CfnLoader.add_multi_constructor("!", _cfn_constructor)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as fh:
        doc = yaml.load(fh, Loader=CfnLoader)
    if not isinstance(doc, dict) or "Resources" not in doc:
        raise ValueError(f"{path} is not a CloudFormation template")
    return doc


@dataclass
class DataPlane:
    """What was created, by logical id: table names, queue URLs and ARNs."""

    tables: dict[str, str]
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]


class _Resolver:
    """Resolves the intrinsics the data plane uses, for one stack prefix."""

    def __init__(self, template: dict[str, Any], prefix: str) -> None:
        self.params = {name: spec.get("Default") for name, spec in (template.get("Parameters") or {}).items()}
        self.params["Prefix"] = prefix
        self.params["AWS::Region"] = os.environ.get("AWS_REGION", aws.DEFAULT_REGION)
        self.atts: dict[tuple[str, str], str] = {}
        self.refs: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"Ref"}:
                ref = value["Ref"]
                if ref in self.params:
                    return self.params[ref]
                return self.refs[ref]
            if set(value) == {"Fn::Sub"}:
                text = value["Fn::Sub"]
                if not isinstance(text, str):
                    raise ValueError("only the one-argument form of !Sub is supported in the data plane")
                for name, param in self.params.items():
                    text = text.replace("${" + name + "}", str(param))
                if "${" in text:
                    raise ValueError(f"unresolved substitution in {text!r}")
                return text
            if set(value) == {"Fn::GetAtt"}:
                logical, att = value["Fn::GetAtt"]
                return self.atts[(logical, att)]
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def _data_plane_order(resources: dict[str, Any]) -> list[str]:
    """Logical ids of the data plane, dependencies first (a queue's DLQ before the queue)."""
    ids = [lid for lid, r in resources.items() if r.get("Type") in DATA_PLANE_TYPES]

    def deps(node: Any) -> set[str]:
        if isinstance(node, dict):
            found: set[str] = set()
            if "Fn::GetAtt" in node:
                found.add(node["Fn::GetAtt"][0])
            if "Ref" in node and node["Ref"] in ids:
                found.add(node["Ref"])
            for v in node.values():
                found |= deps(v)
            return found
        if isinstance(node, list):
            return set().union(*(deps(v) for v in node)) if node else set()
        return set()

    ordered: list[str] = []
    pending = {lid: deps(resources[lid].get("Properties", {})) & set(ids) for lid in ids}
    while pending:
        ready = sorted(lid for lid, d in pending.items() if d <= set(ordered))
        if not ready:
            raise ValueError(f"circular data-plane dependencies: {sorted(pending)}")
        ordered.extend(ready)
        for lid in ready:
            del pending[lid]
    return ordered


def _create_table(ddb: Any, props: dict[str, Any]) -> str:
    name = str(props["TableName"])
    request = {k: v for k, v in props.items() if k not in _TABLE_PROPS_IGNORED}
    try:
        ddb.create_table(TableName=name, **request)
    except ddb.exceptions.ResourceInUseException:
        return name  # created by an earlier run: `avmon init` is idempotent
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
        )
    return name


def _create_queue(sqs: Any, props: dict[str, Any]) -> tuple[str, str]:
    attributes: dict[str, str] = {}
    for key, value in props.items():
        if key in _QUEUE_PROPS_IGNORED:
            continue
        attributes[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    url = sqs.create_queue(QueueName=props["QueueName"], Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def create_data_plane(prefix: str = DEFAULT_PREFIX, template_path: Path = TEMPLATE) -> DataPlane:
    """Create (or find) the template's tables and queues at ``AWS_ENDPOINT_URL``."""
    template = load_template(template_path)
    resources = template["Resources"]
    resolve = _Resolver(template, prefix)
    ddb, sqs = aws.client("dynamodb"), aws.client("sqs")
    plane = DataPlane(tables={}, queue_urls={}, queue_arns={})
    for logical in _data_plane_order(resources):
        resource = resources[logical]
        props = resolve(resource.get("Properties", {}))
        if resource["Type"] == "AWS::DynamoDB::Table":
            plane.tables[logical] = _create_table(ddb, props)
            resolve.refs[logical] = plane.tables[logical]
        else:
            url, arn = _create_queue(sqs, props)
            plane.queue_urls[logical] = url
            plane.queue_arns[logical] = arn
            resolve.refs[logical] = url
            resolve.atts[(logical, "Arn")] = arn
    return plane


def settings_env(prefix: str) -> dict[str, str]:
    """The ``AVMON_*`` variables that point both processes at a stack built with ``prefix``."""
    return {
        "AVMON_STREAMS_TABLE": f"{prefix}-streams",
        "AVMON_DEFECTS_TABLE": f"{prefix}-defects",
        "AVMON_WORKERS_TABLE": f"{prefix}-workers",
        "AVMON_DELIVERIES_TABLE": f"{prefix}-deliveries",
        "AVMON_ASSIGNMENT_QUEUE": f"{prefix}-assignments",
        "AVMON_DEAD_LETTER_QUEUE": f"{prefix}-assignments-dlq",
    }


# ---------------------------------------------------------------- the emulator


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(host: str = "127.0.0.1", port: int = 4566, timeout_s: float = 30.0) -> Emulator:
    """Start moto's server (:func:`serve_emulator`) in its own process and wait until it answers."""
    if _port_open(host, port):
        raise RuntimeError(f"{host}:{port} is already in use: is another avmon stack or LocalStack running?")
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        # Its own process group: a terminal's Ctrl-C must not stop it before the processes that
        # still need it (workers releasing their leases); whoever started it stops it.
        start_new_session=True,
    )
    emulator = Emulator(process=process, url=f"http://{host}:{port}")
    deadline = time.monotonic() + timeout_s
    while not _port_open(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"the AWS emulator exited with status {process.returncode}")
        if time.monotonic() > deadline:
            emulator.stop()
            raise RuntimeError(f"the AWS emulator did not answer on {host}:{port} within {timeout_s:.0f} s")
        time.sleep(0.05)
    return emulator


@contextlib.contextmanager
def running_emulator(host: str = "127.0.0.1", port: int = 4566) -> Iterator[Emulator]:
    emulator = start_emulator(host, port)
    try:
        yield emulator
    finally:
        emulator.stop()


def serve_emulator(argv: list[str]) -> None:
    """moto's server (``python -m moto.server`` arguments), with DynamoDB requests serialised.

    moto 5's ``transact_write_items`` deep-copies every table a transaction touches and, when a
    condition fails, puts the copies back: every write another request thread made to those
    tables in between is lost. A worker's fenced defect write (a transaction with a condition on
    the streams table) failing while the router created a stream made that stream vanish (201,
    then 404: 2 of 115 streams under churn). One lock around each DynamoDB request closes the
    window; DynamoDB calls on the emulator take a few ms, and SQS requests do not wait for it.
    """
    import threading

    from moto import server
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    unlocked = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> Any:
        with lock:
            return unlocked(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    server.main(argv)


if __name__ == "__main__":
    serve_emulator(sys.argv[1:])
