"""Static checks of the deployment: the CloudFormation template, its IAM policies, the compose file
and the Dockerfiles. Nothing here needs AWS or a Docker engine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cfnlint.api import lint_file  # type: ignore[import-untyped]

from infra.local import load_template
from shared.settings import RouterSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "template.yaml"
COMPOSE = ROOT / "docker-compose.yml"
WORKER_DOCKERFILE = ROOT / "infra" / "docker" / "worker.Dockerfile"
ROUTER_DOCKERFILE = ROOT / "infra" / "docker" / "router.Dockerfile"

# Actions that IAM only grants on Resource "*" (they have no resource type in the IAM service
# authorization reference). Everything else must name its resource. Not here on purpose:
# logs:CreateLogGroup (it takes a log-group ARN; our log groups are created by the template anyway).
STAR_RESOURCE_ACTIONS: dict[str, str] = {
    # The registry login token is account-wide; the image pull itself is scoped to the repository.
    "ecr:GetAuthorizationToken": "no resource type",
    # Metrics have no ARN; restrict with a cloudwatch:namespace condition instead.
    "cloudwatch:PutMetricData": "no resource type",
    # X-Ray trace submission (Lambda active tracing, if ever enabled) has no resource type.
    "xray:PutTraceSegments": "no resource type",
    "xray:PutTelemetryRecords": "no resource type",
}

# What each role may do, and nothing more: the calls the worker and the router actually make.
EXPECTED_ACTIONS: dict[str, set[str]] = {
    "WorkerTaskRole": {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:ConditionCheckItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:DeleteItem",
        "sns:Publish",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:SendMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
    },
    "WorkerExecutionRole": {
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
    "RouterRole": {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "sqs:SendMessage",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
}

# A resource ARN whose resource part is only a type wildcard ("table/*", "log-group:*", "*").
_TYPE_WILDCARD = re.compile(r"^(\*|[A-Za-z0-9-]+[/:]\*)$")
_SUB_VARIABLE = re.compile(r"\$\{[^}]*\}")
_AVMON_VAR = re.compile(r"^AVMON_[A-Z0-9_]+$")
_COMPOSE_DEFAULT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}")


# ---------------------------------------------------------------- helpers


def _template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policy_documents(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    props = resource.get("Properties", {})
    kind = resource["Type"]
    if kind == "AWS::IAM::Role":
        for policy in props.get("Policies", []):
            yield policy["PolicyDocument"]
    elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
        yield props["PolicyDocument"]


def _statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every identity-policy statement of the template, named ``LogicalId/Sid``."""
    for logical_id, resource in template["Resources"].items():
        for document in _policy_documents(resource):
            for index, statement in enumerate(_as_list(document["Statement"])):
                yield f"{logical_id}/{statement.get('Sid', index)}", statement


def _resource_text(resource: Any) -> str | None:
    """The ARN pattern of a literal or ``!Sub`` resource; None for ``!Ref``/``!GetAtt`` (one resource)."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    return None


def _env_names(settings_class: type[RouterSettings] | type[WorkerSettings]) -> set[str]:
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings_class.model_fields}


def _known_avmon_variables() -> set[str]:
    return _env_names(RouterSettings) | _env_names(WorkerSettings)


def _compose() -> dict[str, Any]:
    with COMPOSE.open() as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict)
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] form
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, args = stripped.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


# ---------------------------------------------------------------- the template


def test_template_passes_cfn_lint() -> None:
    matches = lint_file(TEMPLATE)
    assert [str(match) for match in matches] == []


def test_template_keeps_the_data_plane_that_the_local_stack_reads() -> None:
    resources = _template()["Resources"]
    assert resources["StreamsTable"]["Type"] == "AWS::DynamoDB::Table"
    assert resources["DefectsTable"]["Type"] == "AWS::DynamoDB::Table"
    assert resources["AssignmentQueue"]["Type"] == "AWS::SQS::Queue"
    assert resources["AssignmentDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


def test_template_passes_every_avmon_variable_to_both_processes() -> None:
    resources = _template()["Resources"]
    (worker,) = resources["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    worker_env = {item["Name"] for item in worker["Environment"]}
    router_env = set(resources["RouterFunction"]["Properties"]["Environment"]["Variables"])
    required = {
        "AVMON_STREAMS_TABLE",
        "AVMON_DEFECTS_TABLE",
        "AVMON_ASSIGNMENT_QUEUE",
        "AVMON_DEAD_LETTER_QUEUE",
        "AVMON_WORKER_CAPACITY",
        "AVMON_ALLOWED_SCHEMES",
    }
    assert required <= worker_env
    assert required <= router_env
    unknown = {name for name in worker_env | router_env if _AVMON_VAR.match(name)} - _known_avmon_variables()
    assert unknown == set()


# ---------------------------------------------------------------- IAM


def test_iam_statements_grant_no_wildcard_actions() -> None:
    offending = [
        name
        for name, statement in _statements(_template())
        if "NotAction" in statement or any("*" in action for action in _as_list(statement.get("Action", [])))
    ]
    assert offending == []


def test_iam_star_resource_only_for_actions_that_have_no_resource_type() -> None:
    offending = []
    for name, statement in _statements(_template()):
        assert "NotResource" not in statement, name
        if "*" in _as_list(statement["Resource"]):
            actions = set(_as_list(statement["Action"]))
            if not actions <= set(STAR_RESOURCE_ACTIONS):
                offending.append((name, sorted(actions - set(STAR_RESOURCE_ACTIONS))))
    assert offending == []


def test_iam_resource_arns_name_a_specific_resource() -> None:
    offending = []
    for name, statement in _statements(_template()):
        for resource in _as_list(statement["Resource"]):
            text = _resource_text(resource)
            if text is None or text == "*":  # !GetAtt/!Ref name one resource; "*" is the test above
                continue
            parts = _SUB_VARIABLE.sub("VAR", text).split(":", 5)  # ${AWS::Region} has colons
            wildcard_scope = len(parts) == 6 and "*" in (parts[3], parts[4])
            if wildcard_scope or _TYPE_WILDCARD.match(parts[-1]):
                offending.append((name, text))
    assert offending == []


def test_iam_roles_grant_exactly_the_actions_each_process_uses() -> None:
    template = _template()
    granted: dict[str, set[str]] = {}
    for name, statement in _statements(template):
        assert statement["Effect"] == "Allow", name
        granted.setdefault(name.split("/")[0], set()).update(_as_list(statement["Action"]))
    assert {role: granted.get(role, set()) for role in EXPECTED_ACTIONS} == EXPECTED_ACTIONS


def test_iam_roles_attach_no_policies_defined_outside_the_template() -> None:
    resources = _template()["Resources"]
    outside = [
        (logical_id, arn)
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::IAM::Role"
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", [])
        if not (isinstance(arn, dict) and arn.get("Ref") in resources)
    ]
    assert outside == []


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_images_are_pinned_to_a_tag() -> None:
    unpinned = []
    for name, service in _services().items():
        image = service.get("image")
        if image is None:
            assert "build" in service, name
            continue
        resolved = _COMPOSE_DEFAULT.sub(lambda m: m.group(1), str(image))
        last = resolved.rsplit("/", 1)[-1]
        if "@sha256:" in last:
            continue
        tag = last.partition(":")[2]
        if not tag or tag == "latest":
            unpinned.append((name, resolved))
    assert unpinned == []


def test_compose_worker_service_can_be_scaled() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_compose_commands_are_exec_form() -> None:
    shell_form = [
        (name, key)
        for name, service in _services().items()
        for key in ("command", "entrypoint")
        if key in service
        and not (isinstance(service[key], list) and all(isinstance(a, str) for a in service[key]))
    ]
    assert shell_form == []


def test_compose_worker_gets_sigterm_and_the_ecs_grace_period() -> None:
    worker = _services()["worker"]
    assert worker["command"] == ["avmon", "worker"]
    assert worker["init"] is False
    assert worker["stop_grace_period"] == "30s"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_init_service_creates_the_resources_before_router_and_workers() -> None:
    services = _services()
    assert services["init"]["command"] == ["avmon", "init"]
    for name in ("router", "worker"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_router_serves_port_8080() -> None:
    router = _services()["router"]
    assert router["command"] == ["avmon", "router", "--host", "0.0.0.0", "--port", "8080"]
    assert any(str(port).endswith(":8080") for port in router["ports"])


def test_compose_emulator_listens_on_port_4566() -> None:
    services = _services()
    endpoints = {_environment(s).get("AWS_ENDPOINT_URL") for s in services.values()} - {None}
    assert len(endpoints) == 1
    url = urlsplit(str(endpoints.pop()))
    assert url.port == 4566
    assert url.hostname in services
    emulator = services[str(url.hostname)]
    assert any(str(port).endswith(":4566") for port in emulator["ports"])


def test_compose_avmon_variables_are_known_settings() -> None:
    named = {
        key for service in _services().values() for key in _environment(service) if key.startswith("AVMON_")
    }
    assert named - _known_avmon_variables() == set()


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", [WORKER_DOCKERFILE, ROUTER_DOCKERFILE], ids=["worker", "router"])
def test_dockerfile_cmd_and_entrypoint_are_exec_form(dockerfile: Path) -> None:
    instructions = _dockerfile_instructions(dockerfile)
    commands = [(k, args) for k, args in instructions if k in ("CMD", "ENTRYPOINT")]
    assert commands
    assert all(args.startswith("[") and args.endswith("]") for _, args in commands)


@pytest.mark.parametrize("dockerfile", [WORKER_DOCKERFILE, ROUTER_DOCKERFILE], ids=["worker", "router"])
def test_dockerfile_base_images_are_pinned_to_a_tag(dockerfile: Path) -> None:
    images = [args.split()[0] for keyword, args in _dockerfile_instructions(dockerfile) if keyword == "FROM"]
    assert images
    for image in images:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", image


def test_worker_dockerfile_runs_avmon_worker_as_a_non_root_user() -> None:
    final = _final_stage(_dockerfile_instructions(WORKER_DOCKERFILE))
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert ("CMD", '["avmon", "worker"]') in final
    assert any(keyword == "HEALTHCHECK" and '["avmon", "health"]' in args for keyword, args in final)


def test_router_dockerfile_runs_the_lambda_handler() -> None:
    final = _final_stage(_dockerfile_instructions(ROUTER_DOCKERFILE))
    assert ("CMD", '["router.handler.lambda_handler"]') in final
