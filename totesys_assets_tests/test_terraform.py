"""deploy/terraform, checked offline: every .tf file parsed with python-hcl2 and its invariants asserted.

No provider can be downloaded here, so `terraform validate/plan` never run in this project's CI; these
tests stand in for what can be checked without one:
- the module is well-formed: every variable, local, resource and data source it references is
  declared; every variable is used and documented;
- it lines up with the Dagster side: every environment variable deploy/dagster.ecs.yaml and
  deploy/workspace.yaml read is set on the containers that read it, the secrets of deploy/secrets.md
  are injected, the roles / log group / topic the run launcher and the alerts name are created and
  output, the image's DAGSTER_HOME and commands match deploy/Dockerfile;
- IAM is least privilege: no wildcard action, "*" resources only for the actions AWS allows no other
  value for, S3 only on the lake bucket and its two prefixes, secrets only the named ones, SNS only
  the alert topic;
- the daemon runs exactly once (also during a deployment), the bucket is private, encrypted,
  versioned and TLS-only, the webserver is reachable only from the CIDRs the user sets, and no
  secret value passes through Terraform.
The security scan (checkov) is deploy/terraform/scan.sh, run by `make check`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

from totesys_assets.settings import DEFAULT_START_DATE
from totesys_assets_tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
TERRAFORM = DEPLOY / "terraform"
OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)

#: Actions that support no resource-level permissions: IAM accepts only "*" as their resource.
AWS_REQUIRES_STAR = {
    "ecr:GetAuthorizationToken",
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ec2:DescribeNetworkInterfaces",
}
#: Resource policies (not attached to a role): checked on their own below.
RESOURCE_POLICIES = {"kms", "lake_bucket", "ecs_tasks_assume"}

LAKE_BUCKET = "${aws_s3_bucket.lake.arn}"
LAKE_OBJECTS = "${aws_s3_bucket.lake.arn}/${var.lake_prefix}/*"
STEP_LOG_OBJECTS = "${aws_s3_bucket.lake.arn}/${var.compute_log_prefix}/*"
KMS_KEY = "${aws_kms_key.this.arn}"
NAMED_SECRETS = {
    "aws_secretsmanager_secret.source_db_url",
    "aws_secretsmanager_secret.warehouse_db_url",
    "local.storage_secret_arn",
    "aws_secretsmanager_secret.alert_webhook",
}


# --------------------------------------------------------------------------------------------------
# The module, parsed
# --------------------------------------------------------------------------------------------------


@dataclass
class Module:
    texts: dict[str, str] = field(default_factory=dict)
    parsed: dict[str, dict] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    terraform: list[dict] = field(default_factory=list)

    def resource(self, kind: str, name: str) -> dict:
        return self.resources[(kind, name)]

    def resolve(self, value: str) -> str:
        """`${local.x}` replaced by local x's value wherever that value is a string, repeatedly."""
        for _ in range(10):
            new = re.sub(
                r"\$\{local\.(\w+)\}",
                lambda m: self.locals[m[1]] if isinstance(self.locals.get(m[1]), str) else m[0],
                value,
            )
            if new == value:
                return value
            value = new
        return value

    def expressions(self) -> str:
        """Every value of every file as one JSON text (no comments): what references are read from."""
        return json.dumps(self.parsed)


def _blocks(entries: list[dict]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for entry in entries:
        for name, body in entry.items():
            assert name not in merged, f"declared twice: {name}"
            merged[name] = body
    return merged


@cache
def _load() -> Module:
    module = Module()
    for path in sorted(TERRAFORM.glob("*.tf")):
        text = path.read_text()
        module.texts[path.name] = text
        doc = hcl2.loads(text, serialization_options=OPTIONS)
        module.parsed[path.name] = doc
        for block in doc.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert (kind, name) not in module.resources, f"resource {kind}.{name} twice"
                    module.resources[(kind, name)] = body
        for block in doc.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert (kind, name) not in module.data, f"data {kind}.{name} twice"
                    module.data[(kind, name)] = body
        module.variables.update(_blocks(doc.get("variable", [])))
        for block in doc.get("locals", []):
            for name, value in block.items():
                assert name not in module.locals, f"local {name} twice"
                module.locals[name] = value
        module.outputs.update(_blocks(doc.get("output", [])))
        module.terraform.extend(doc.get("terraform", []))
    return module


@pytest.fixture(scope="module")
def tf() -> Module:
    return _load()


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _policy_statements(tf: Module, name: str) -> list[dict]:
    return tf.data[("aws_iam_policy_document", name)]["statement"]


def _env_names(tf: Module, expression: Any) -> set[str]:
    """Names of the {name = "..."} entries an environment/secrets expression can produce, following
    local references (conditional entries count: they are the names a container may get)."""
    names: set[str] = set()
    if isinstance(expression, dict):
        if isinstance(expression.get("name"), str):
            names.add(expression["name"])
        return names
    if isinstance(expression, list):
        for item in expression:
            names |= _env_names(tf, item)
        return names
    if isinstance(expression, str):
        names |= set(re.findall(r'\bname\s*=\s*"([A-Z][A-Z0-9_]*)"', expression))
        for local in re.findall(r"\blocal\.(\w+)", expression):
            if local.endswith(("_environment", "_secrets")):
                names |= _env_names(tf, tf.locals[local])
    return names


@dataclass
class Container:
    task_definition: dict
    definitions: str  # the jsonencode([...]) expression

    def attribute(self, key: str) -> str | None:
        match = re.search(rf"\b{key}\s*=\s*(concat\([^)]*\)|local\.\w+(?:\[[^\]]*\])?)", self.definitions)
        return match[1] if match else None

    def command(self) -> list[str] | None:
        definitions = re.sub(r"\bhealthCheck\s*=\s*\{[^}]*\}", "", self.definitions)
        match = re.search(r"\bcommand\s*=\s*(\[[^\]]*\])", definitions)
        if not match:
            return None
        return re.findall(r'"((?:[^"\\]|\\.)*)"', match[1])


def _container(tf: Module, name: str) -> Container:
    task = tf.resource("aws_ecs_task_definition", name)
    return Container(task, task["container_definitions"])


def _environment(tf: Module, name: str) -> set[str]:
    return _env_names(tf, _container(tf, name).attribute("environment"))


def _secrets(tf: Module, name: str) -> set[str]:
    return _env_names(tf, _container(tf, name).attribute("secrets"))


def _env_value(tf: Module, name: str) -> str:
    """The value expression of a plain environment entry, wherever it is declared."""
    for local, value in tf.locals.items():
        if local.endswith("_environment"):
            for entry in _as_list(value):
                if isinstance(entry, dict) and entry.get("name") == name:
                    return entry["value"]
            if isinstance(value, str):
                match = re.search(rf'name\s*=\s*"{name}",\s*value\s*=\s*([^}}]+?)\s*}}', value)
                if match:
                    return "${" + match[1] + "}"
    raise AssertionError(f"{name} is in no *_environment local")


def _yaml_env_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_yaml_env_names(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_yaml_env_names(v) for v in node)) if node else set()
    return set()


@pytest.fixture(scope="module")
def ecs_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.ecs.yaml").read_text())


@pytest.fixture(scope="module")
def launcher(ecs_yaml) -> dict:
    return ecs_yaml["run_launcher"]["config"]


# --------------------------------------------------------------------------------------------------
# The module is well-formed
# --------------------------------------------------------------------------------------------------


def test_every_tf_file_parses_and_the_module_is_complete(tf):
    assert {
        "versions.tf", "variables.tf", "main.tf", "outputs.tf", "kms.tf", "s3.tf", "secrets.tf",
        "sns.tf", "ecr.tf", "logs.tf", "network.tf", "iam.tf", "ecs.tf", "alb.tf", "rds.tf",
    } <= set(tf.texts)  # fmt: skip
    kinds = {kind for kind, _ in tf.resources}
    assert {
        "aws_s3_bucket", "aws_s3_bucket_public_access_block", "aws_s3_bucket_versioning",
        "aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_policy",
        "aws_s3_bucket_lifecycle_configuration", "aws_secretsmanager_secret", "aws_sns_topic",
        "aws_sns_topic_subscription", "aws_ecr_repository", "aws_ecs_cluster", "aws_ecs_task_definition",
        "aws_ecs_service", "aws_iam_role", "aws_iam_role_policy", "aws_cloudwatch_log_group",
        "aws_security_group", "aws_db_instance", "aws_kms_key", "aws_cloudwatch_metric_alarm",
    } <= kinds  # fmt: skip


def test_terraform_and_provider_versions(tf):
    (block,) = tf.terraform
    assert block["required_version"] == ">= 1.6"
    (providers,) = block["required_providers"]
    assert providers["aws"] == {"source": "hashicorp/aws", "version": "~> 5.0"}
    # nothing that needs Terraform > 1.6 (write-only arguments came in 1.11, ephemeral in 1.10)
    text = "\n".join(tf.texts.values())
    assert not re.search(r"_wo\s*=|\bephemeral\s+\"", text)


def test_every_referenced_variable_is_declared_and_every_declared_one_used(tf):
    used = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", tf.expressions()))
    declared = set(tf.variables)
    assert used - declared == set(), "referenced but not declared"
    assert declared - used == set(), "declared but never used"
    for name, body in tf.variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_every_referenced_local_resource_and_data_source_exists(tf):
    text = tf.expressions()
    locals_used = set(re.findall(r"\blocal\.(\w+)", text))
    assert locals_used - set(tf.locals) == set()
    assert set(tf.locals) - locals_used == set(), "locals never used"

    for prefix, kind, name in re.findall(r"(?<![\w.])(data\.)?(aws_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)", text):
        table = tf.data if prefix else tf.resources
        assert (kind, name) in table, f"{prefix}{kind}.{name} is referenced but not declared"

    # every policy document is used by some role, bucket or key
    for kind, name in tf.data:
        if kind == "aws_iam_policy_document":
            assert f"data.aws_iam_policy_document.{name}.json" in text, name


def test_start_date_default_is_the_projects():
    assert _load().variables["start_date"]["default"] == DEFAULT_START_DATE


# --------------------------------------------------------------------------------------------------
# The module lines up with deploy/dagster.ecs.yaml, deploy/workspace.yaml, deploy/secrets.md
# --------------------------------------------------------------------------------------------------


def test_every_env_var_of_the_ecs_instance_is_set_on_every_container(tf, ecs_yaml):
    needed = _yaml_env_names(ecs_yaml)
    assert "DAGSTER_ECS_TASK_ROLE_ARN" in needed and "DAGSTER_PG_PASSWORD" in needed
    for name in ("webserver", "daemon", "code"):
        given = _environment(tf, name) | _secrets(tf, name)
        assert needed - given == set(), name
        # the password is a secret, never a plain variable
        assert "DAGSTER_PG_PASSWORD" in _secrets(tf, name)
        assert "DAGSTER_PG_PASSWORD" not in _environment(tf, name)


def test_the_daemon_has_every_variable_the_launcher_copies_into_run_tasks(tf, launcher):
    daemon = _environment(tf, "daemon")
    # a name in env_vars that is unset in the daemon makes every launch fail
    assert set(launcher["env_vars"]) - daemon == set()
    assert "DAGSTER_HOME" in launcher["env_vars"]
    # and the ARNs of the secrets it passes on
    assert {s["name"] for s in launcher["secrets"]} == {
        "DAGSTER_PG_PASSWORD",
        "TOTESYS_DB_URL",
        "WAREHOUSE_DB_URL",
    }
    for secret in launcher["secrets"]:
        assert secret["valueFrom"]["env"] in daemon
    assert launcher["secrets_tag"] is None
    assert _env_value(tf, "TOTESYS_DB_URL_SECRET_ARN") == "${aws_secretsmanager_secret.source_db_url.arn}"
    assert (
        _env_value(tf, "WAREHOUSE_DB_URL_SECRET_ARN") == "${aws_secretsmanager_secret.warehouse_db_url.arn}"
    )
    assert _env_value(tf, "DAGSTER_PG_PASSWORD_SECRET_ARN") == "${local.storage_password_value_from}"


def test_the_launcher_names_match_the_module(tf, launcher):
    assert launcher["container_name"] == tf.locals["run_container_name"]
    assert launcher["task_definition_prefix"] == tf.locals["run_task_definition_prefix"]
    assert len(launcher["task_definition_prefix"]) <= 16  # the launcher's own limit
    assert launcher["use_current_ecs_task_config"] is True
    assert launcher["task_definition"]["requires_compatibilities"] == ["FARGATE"]
    # the roles and log group it names are this module's, and are outputs
    expected = {
        "DAGSTER_ECS_EXECUTION_ROLE_ARN": "${aws_iam_role.execution.arn}",
        "DAGSTER_ECS_TASK_ROLE_ARN": "${aws_iam_role.run.arn}",
        "DAGSTER_ECS_LOG_GROUP": "${aws_cloudwatch_log_group.runs.name}",
    }
    assert {k: launcher["task_definition"][f] for k, f in zip(
        expected, ("execution_role_arn", "task_role_arn", "log_group"), strict=True
    )} == {k: {"env": k} for k in expected}  # fmt: skip
    for name, value in expected.items():
        assert _env_value(tf, name) == value
        assert tf.outputs[name]["value"] == value
    assert tf.resource("aws_cloudwatch_log_group", "runs")["name"] == "${local.runs_log_group}"


def test_workspace_and_code_server_address(tf):
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    needed = _yaml_env_names(workspace)
    assert needed == {"TOTESYS_CODE_SERVER_HOST", "TOTESYS_CODE_SERVER_PORT"}
    for name in ("webserver", "daemon"):
        assert needed <= _environment(tf, name)
    assert _env_value(tf, "TOTESYS_CODE_SERVER_HOST") == "${local.code_server_host}"
    assert tf.locals["code_server_port"] == 4000
    # the host is the code service's Cloud Map name, and the code service registers there
    assert tf.locals["code_server_host"] == "${local.code_service_name}.${local.service_namespace}"
    assert tf.resource("aws_service_discovery_service", "code")["name"] == "${local.code_service_name}"
    (registry,) = tf.resource("aws_ecs_service", "code")["service_registries"]
    assert registry["registry_arn"] == "${aws_service_discovery_service.code.arn}"
    for key in ("TOTESYS_CODE_SERVER_HOST", "TOTESYS_CODE_SERVER_PORT"):
        assert key in tf.outputs


def test_the_code_location_gets_its_image_alerts_and_secrets(tf):
    env = _environment(tf, "code")
    assert {"DAGSTER_CURRENT_IMAGE", "TOTESYS_ALERT_SNS_TOPIC_ARN", "TOTESYS_LAKE_URL", "TOTESYS_START_DATE",
            "DAGSTER_WEBSERVER_URL"} <= env  # fmt: skip
    assert _env_value(tf, "TOTESYS_ALERT_SNS_TOPIC_ARN") == "${aws_sns_topic.alerts.arn}"
    assert tf.outputs["TOTESYS_ALERT_SNS_TOPIC_ARN"]["value"] == "${aws_sns_topic.alerts.arn}"
    assert _env_value(tf, "DAGSTER_CURRENT_IMAGE") == "${local.image}"
    assert _env_value(tf, "TOTESYS_LAKE_URL") == "${local.lake_url}"
    assert tf.outputs["TOTESYS_LAKE_URL"]["value"] == "${local.lake_url}"
    assert tf.locals["lake_url"] == "s3://${aws_s3_bucket.lake.bucket}/${var.lake_prefix}"
    # the webserver and daemon carry no source/warehouse credentials (deploy/secrets.md)
    assert _secrets(tf, "code") >= {
        "TOTESYS_DB_URL",
        "WAREHOUSE_DB_URL",
        "DAGSTER_PG_PASSWORD",
        "TOTESYS_ALERT_WEBHOOK_URL",
    }
    for name in ("webserver", "daemon"):
        assert _secrets(tf, name) == {"DAGSTER_PG_PASSWORD"}, name
    # alerts go to the topic, optionally by e-mail
    sub = tf.resource("aws_sns_topic_subscription", "alert_email")
    assert sub["protocol"] == "email" and sub["topic_arn"] == "${aws_sns_topic.alerts.arn}"
    assert sub["count"] == "${var.alert_email == null ? 0 : 1}"


def test_secrets_md_credentials_have_secrets_here(tf):
    table = (DEPLOY / "secrets.md").read_text()
    variables = set(re.findall(r"^\| [^|]+ \| `([A-Z_]+)`", table, flags=re.MULTILINE))
    assert {
        "TOTESYS_DB_URL",
        "WAREHOUSE_DB_URL",
        "DAGSTER_PG_PASSWORD",
        "TOTESYS_ALERT_WEBHOOK_URL",
    } <= variables
    injected = _secrets(tf, "code")
    # every credential of the table is injected into the code location, except the SMTP password,
    # which deploy/terraform/README.md tells how to add
    assert variables - injected == {"TOTESYS_ALERT_SMTP_PASSWORD"}
    assert "TOTESYS_ALERT_SMTP_PASSWORD" in (TERRAFORM / "README.md").read_text()


def test_the_image_matches_deploy_dockerfile(tf):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    home = tf.locals["dagster_home_ecs"]
    assert re.search(rf"^COPY deploy/dagster\.ecs\.yaml {re.escape(home)}/dagster\.yaml$", dockerfile, re.M)
    assert re.search(rf"^COPY deploy/workspace\.yaml {re.escape(home)}/$", dockerfile, re.M)
    assert "!deploy/dagster.ecs.yaml" in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert re.search(r"^COPY deploy/init_instance\.sh /opt/dagster/init_instance\.sh$", dockerfile, re.M)
    assert _env_value(tf, "DAGSTER_HOME") == "${local.dagster_home_ecs}"

    workspace = "${local.dagster_home_ecs}/workspace.yaml"
    webserver = _container(tf, "webserver").command()
    assert webserver is not None and webserver[0] == "dagster-webserver"
    assert webserver[webserver.index("-w") + 1] == workspace
    assert re.search(r'"-p",\s*tostring\(local\.webserver_port\)', _container(tf, "webserver").definitions)
    assert tf.locals["webserver_port"] == 3000
    (daemon,) = [c for c in [_container(tf, "daemon").command()] if c]
    assert daemon[:2] == ["sh", "-c"]
    assert daemon[2] == f"sh /opt/dagster/init_instance.sh && exec dagster-daemon run -w {workspace}"
    # the code location runs the image's own CMD (the code server on EXPOSE 4000)
    assert _container(tf, "code").command() is None
    assert re.search(r"^EXPOSE 4000$", dockerfile, re.M)
    for name in ("webserver", "daemon", "code"):
        container = _container(tf, name)
        assert re.search(r"\bimage\s*=\s*local\.image\b", container.definitions), name
        assert (
            container.attribute("logConfiguration") == f"local.log_configuration[local.{name}_service_name]"
        )
    assert tf.locals["image"] == "${aws_ecr_repository.this.repository_url}:${var.image_tag}"


def test_task_roles_and_networking(tf):
    roles = {"webserver": "webserver", "daemon": "daemon", "code": "code"}
    for name, role in roles.items():
        task = tf.resource("aws_ecs_task_definition", name)
        assert task["task_role_arn"] == f"${{aws_iam_role.{role}.arn}}"
        assert task["execution_role_arn"] == "${aws_iam_role.execution.arn}"
        assert task["requires_compatibilities"] == ["FARGATE"] and task["network_mode"] == "awsvpc"
        service = tf.resource("aws_ecs_service", name)
        assert service["task_definition"] == f"${{aws_ecs_task_definition.{name}.arn}}"
        (network,) = service["network_configuration"]
        assert network["security_groups"] == [f"${{aws_security_group.{name}.id}}"]
        assert network["subnets"] == "${var.private_subnet_ids}"
    # every role has exactly its own inline policy and no managed policy attached
    for kind, name in tf.resources:
        assert kind not in {"aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "aws_iam_user"}
        if kind == "aws_iam_role":
            policy = tf.resource("aws_iam_role_policy", name)
            assert policy["role"] == f"${{aws_iam_role.{name}.id}}"
            assert policy["policy"] == f"${{data.aws_iam_policy_document.{name}.json}}"
            assert (
                tf.resource(kind, name)["assume_role_policy"]
                == "${data.aws_iam_policy_document.ecs_tasks_assume.json}"
            )


# --------------------------------------------------------------------------------------------------
# IAM: least privilege
# --------------------------------------------------------------------------------------------------


def _role_policies(tf: Module) -> dict[str, list[dict]]:
    return {
        name: body["statement"]
        for (kind, name), body in tf.data.items()
        if kind == "aws_iam_policy_document" and name not in RESOURCE_POLICIES
    }


def test_role_policies_have_no_wildcard_actions_and_star_only_where_aws_requires_it(tf):
    policies = _role_policies(tf)
    assert set(policies) == {"execution", "run", "daemon", "webserver", "code"}
    iam_text = tf.texts["iam.tf"]
    for name, statements in policies.items():
        for statement in statements:
            assert statement.get("effect", "Allow") == "Allow"
            assert "not_actions" not in statement and "not_resources" not in statement
            actions = statement["actions"]
            resources = _as_list(statement["resources"])
            for action in actions:
                assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), (name, action)  # no "*" at all
            if "*" in resources:
                assert resources == ["*"], (name, statement)
                assert set(actions) <= AWS_REQUIRES_STAR, (name, actions)
                # and the statement says so beside it
                sid = statement["sid"]
                at = re.search(rf'sid\s*=\s*"{sid}"', iam_text)
                assert at, sid
                before = iam_text[: at.start()].rsplit("statement {", 1)[0]
                assert "AWS_REQUIRES_STAR" in before.rsplit("\n\n", 1)[-1], sid
            else:
                # every other resource is one of this module's, or an ARN in this account
                for resource in _resolved_resources(tf, statement):
                    assert re.search(r"\baws_[a-z0-9_]+\.", resource), (
                        name,
                        resource,
                    )
    # the key policy's account-root statement is the module's only "*" action, and the bucket's only
    # wildcard is a Deny
    kms = _policy_statements(tf, "kms")
    assert [s["sid"] for s in kms if any("*" in a for a in s["actions"])] == ["AccountOwnsTheKey"]
    (root,) = [s for s in kms if s["sid"] == "AccountOwnsTheKey"]
    assert root["principals"] == [
        {"type": "AWS", "identifiers": ["arn:${local.partition}:iam::${local.account_id}:root"]}
    ]
    for statement in kms:
        if statement["sid"] != "AccountOwnsTheKey":
            assert statement["principals"][0]["type"] == "Service" and statement.get("condition")
    (deny,) = _policy_statements(tf, "lake_bucket")
    assert deny["effect"] == "Deny" and deny["condition"][0]["variable"] == "aws:SecureTransport"


def _resolved_resources(tf: Module, statement: dict) -> list[str]:
    return [tf.resolve(r) for r in _as_list(statement["resources"])]


def test_s3_access_is_the_lake_bucket_and_its_prefixes_only(tf):
    for name, statements in _role_policies(tf).items():
        for statement in statements:
            s3 = [a for a in statement["actions"] if a.startswith("s3:")]
            if not s3:
                continue
            resources = _resolved_resources(tf, statement)
            for action in s3:
                if action == "s3:ListBucket":
                    assert resources == [LAKE_BUCKET], (name, statement)
                else:
                    assert set(resources) <= {LAKE_OBJECTS, STEP_LOG_OBJECTS}, (name, statement)
            assert set(s3) <= {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}, (name, s3)
    # and the two prefixes are distinct
    assert tf.variables["lake_prefix"]["default"] != tf.variables["compute_log_prefix"]["default"]


def test_the_run_task_role_reaches_the_lake_and_nothing_else(tf):
    actions: set[str] = set()
    resources: set[str] = set()
    for statement in _policy_statements(tf, "run"):
        actions |= set(statement["actions"])
        resources |= set(_resolved_resources(tf, statement))
        if any(a.startswith("kms:") for a in statement["actions"]):
            (condition,) = statement["condition"]
            assert condition["variable"] == "kms:ViaService"
            assert condition["values"] == ["${local.s3_via_service}"]
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "kms:Decrypt", "kms:GenerateDataKey"}
    assert resources == {LAKE_OBJECTS, STEP_LOG_OBJECTS, LAKE_BUCKET, KMS_KEY}
    # its credentials come in as env vars resolved by the execution role; alerts are sent by the
    # code location: no secretsmanager, no sns for runs


def test_secrets_sns_passrole_and_kms_are_scoped(tf):
    secret_arns = tf.locals["secret_arns"]
    referenced = set(re.findall(r"(aws_secretsmanager_secret\.\w+|local\.\w+)", secret_arns))
    assert referenced == NAMED_SECRETS
    for name, statements in _role_policies(tf).items():
        for statement in statements:
            actions, resources = statement["actions"], _resolved_resources(tf, statement)
            if any(a.startswith("secretsmanager:") for a in actions):
                assert (name, actions) == ("execution", ["secretsmanager:GetSecretValue"])
                assert resources == [secret_arns]
            if any(a.startswith("sns:") for a in actions):
                assert (name, actions, resources) == (
                    "code",
                    ["sns:Publish"],
                    ["${aws_sns_topic.alerts.arn}"],
                )
            if "iam:PassRole" in actions:
                assert (name, actions) == ("daemon", ["iam:PassRole"])
                assert resources == ["${aws_iam_role.execution.arn}", "${aws_iam_role.run.arn}"]
                assert statement["condition"][0]["values"] == ["ecs-tasks.amazonaws.com"]
            if any(a.startswith("kms:") for a in actions):
                assert resources == [KMS_KEY], (name, statement)
                assert statement["condition"][0]["variable"] == "kms:ViaService", name
            if "ecs:RunTask" in actions:
                assert resources == [tf.resolve(
                    "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/"
                    "${local.run_task_definition_prefix}_*:*"
                )]  # fmt: skip
                assert statement["condition"][0]["values"] == ["${local.cluster_arn}"]
            if {"ecs:StopTask", "ecs:DescribeTasks", "ecs:TagResource"} & set(actions):
                assert resources == [tf.resolve(
                    "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task/${local.cluster_name}/*"
                )]  # fmt: skip


def test_tasks_trust_only_ecs_tasks_of_this_account(tf):
    (statement,) = _policy_statements(tf, "ecs_tasks_assume")
    assert statement["actions"] == ["sts:AssumeRole"]
    assert statement["principals"] == [{"type": "Service", "identifiers": ["ecs-tasks.amazonaws.com"]}]
    assert {c["variable"] for c in statement["condition"]} == {"aws:SourceAccount", "aws:SourceArn"}


# --------------------------------------------------------------------------------------------------
# Daemon, bucket, network, secrets
# --------------------------------------------------------------------------------------------------


def test_exactly_one_daemon_also_during_a_deployment(tf):
    daemon = tf.resource("aws_ecs_service", "daemon")
    assert daemon["desired_count"] == 1
    assert daemon["deployment_maximum_percent"] == 100
    assert daemon["deployment_minimum_healthy_percent"] == 0
    for kind, _ in tf.resources:
        assert not kind.startswith("aws_appautoscaling"), "nothing may scale the daemon"
    code = tf.resource("aws_ecs_service", "code")
    assert code["desired_count"] == 1 and code["deployment_maximum_percent"] == 100


def test_the_bucket_is_private_encrypted_versioned_tls_only_and_expires_step_logs(tf):
    access = tf.resource("aws_s3_bucket_public_access_block", "lake")
    assert access["bucket"] == "${aws_s3_bucket.lake.id}"
    for key in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert access[key] is True, key
    (rule,) = tf.resource("aws_s3_bucket_server_side_encryption_configuration", "lake")["rule"]
    (default,) = rule["apply_server_side_encryption_by_default"]
    assert default == {"sse_algorithm": "aws:kms", "kms_master_key_id": KMS_KEY}
    assert tf.resource("aws_kms_key", "this")["enable_key_rotation"] is True
    (versioning,) = tf.resource("aws_s3_bucket_versioning", "lake")["versioning_configuration"]
    assert versioning["status"] == "Enabled"
    (ownership,) = tf.resource("aws_s3_bucket_ownership_controls", "lake")["rule"]
    assert ownership["object_ownership"] == "BucketOwnerEnforced"
    policy = tf.resource("aws_s3_bucket_policy", "lake")
    assert policy["policy"] == "${data.aws_iam_policy_document.lake_bucket.json}"
    (deny,) = _policy_statements(tf, "lake_bucket")
    assert deny["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]
    assert set(deny["resources"]) == {LAKE_BUCKET, "${aws_s3_bucket.lake.arn}/*"}

    rules = {r["id"]: r for r in tf.resource("aws_s3_bucket_lifecycle_configuration", "lake")["rule"]}
    logs = rules["expire-compute-logs"]
    assert logs["status"] == "Enabled"
    assert logs["filter"] == [{"prefix": "${var.compute_log_prefix}/"}]
    assert logs["expiration"] == [{"days": "${var.compute_log_retention_days}"}]
    assert tf.resource("aws_s3_bucket", "lake")["force_destroy"] == "${var.force_destroy_bucket}"
    assert tf.variables["force_destroy_bucket"]["default"] is False


def _rules(tf: Module, kind: str) -> dict[str, dict]:
    return {name: body for (k, name), body in tf.resources.items() if k == kind}


def test_the_webserver_is_reachable_only_from_the_users_cidrs(tf):
    ingress = _rules(tf, "aws_vpc_security_group_ingress_rule")
    by_group: dict[str, list[str]] = {}
    for name, rule in ingress.items():
        assert rule.get("description"), name
        assert rule.get("cidr_ipv4") not in ("0.0.0.0/0",) and "cidr_ipv6" not in rule, name
        by_group.setdefault(rule["security_group_id"], []).append(name)
    # the webserver: the allowed CIDRs directly, or the load balancer, which admits only them
    assert sorted(by_group["${aws_security_group.webserver.id}"]) == [
        "webserver_from_allowed_cidrs",
        "webserver_from_load_balancer",
    ]
    direct = ingress["webserver_from_allowed_cidrs"]
    assert direct["cidr_ipv4"] == "${each.value}"
    assert (
        direct["for_each"]
        == "${var.webserver_certificate_arn == null ? toset(var.webserver_allowed_cidrs) : toset([])}"
    )
    assert (
        ingress["webserver_from_load_balancer"]["referenced_security_group_id"]
        == "${aws_security_group.load_balancer[0].id}"
    )
    lb = ingress["load_balancer_https"]
    assert lb["cidr_ipv4"] == "${each.value}" and "var.webserver_allowed_cidrs" in lb["for_each"]
    assert lb["from_port"] == lb["to_port"] == 443
    # the daemon (and so every run task) admits nothing; the code server only the webserver and daemon
    assert "${aws_security_group.daemon.id}" not in by_group
    assert {ingress[n]["referenced_security_group_id"] for n in by_group["${aws_security_group.code.id}"]} == {
        "${aws_security_group.webserver.id}", "${aws_security_group.daemon.id}"
    }  # fmt: skip
    # no security group declares inline rules, and no egress opens every port
    for name, group in _rules(tf, "aws_security_group").items():
        assert "ingress" not in group and "egress" not in group, name
    for name, rule in _rules(tf, "aws_vpc_security_group_egress_rule").items():
        assert rule["ip_protocol"] == "tcp" and rule.get("description"), name
    # HTTPS only on the load balancer
    (listener,) = [tf.resource("aws_lb_listener", "https")]
    assert listener["protocol"] == "HTTPS" and listener["port"] == 443
    assert [k for k, _ in tf.resources if k == "aws_lb_listener"] == ["aws_lb_listener"]


def test_no_secret_value_passes_through_terraform(tf):
    kinds = {kind for kind, _ in tf.resources}
    assert "aws_secretsmanager_secret_version" not in kinds
    assert "random_password" not in kinds
    for name, body in tf.variables.items():
        assert not re.search(r"password|secret_value|db_url|token", name), name
        assert body.get("sensitive") is not True, name
    rds = tf.resource("aws_db_instance", "storage")
    assert rds["manage_master_user_password"] is True and "password" not in rds
    assert rds["storage_encrypted"] is True and rds["publicly_accessible"] is False
    (force_ssl,) = [
        p
        for p in tf.resource("aws_db_parameter_group", "storage")["parameter"]
        if p["name"] == "rds.force_ssl"
    ]
    assert force_ssl["value"] == "1"
    for name in ("source_db_url", "warehouse_db_url", "storage_password", "alert_webhook"):
        assert tf.resource("aws_secretsmanager_secret", name)["kms_key_id"] == "${aws_kms_key.this.arn}"
    # names as in deploy/secrets.md's examples
    assert tf.resource("aws_secretsmanager_secret", "source_db_url")["name"] == "${var.name}/source-url"
    assert tf.resource("aws_secretsmanager_secret", "warehouse_db_url")["name"] == "${var.name}/warehouse-url"
    # the RDS-managed secret is a JSON document: take its password key
    assert tf.locals["storage_password_value_from"] == (
        '${var.create_rds ? "${local.storage_secret_arn}:password::" : local.storage_secret_arn}'
    )


def test_log_groups_are_encrypted_and_kept(tf):
    for name, group in _rules(tf, "aws_cloudwatch_log_group").items():
        assert group["kms_key_id"] == KMS_KEY, name
        assert group["retention_in_days"] == "${var.log_retention_days}", name


# --------------------------------------------------------------------------------------------------
# checkov skips and the README
# --------------------------------------------------------------------------------------------------


def test_every_checkov_skip_is_justified_beside_its_resource(tf):
    skips = 0
    for file, text in tf.texts.items():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if "checkov:skip" not in line:
                continue
            skips += 1
            match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
            assert match, f"{file}:{number + 1}: {line}"
            assert len(match[2].strip()) >= 40, f"{file}:{number + 1}: say why"
            # inside a block, right under its opening line (or under other skips)
            above = next(x for x in reversed(lines[:number]) if "checkov:skip" not in x)
            assert re.match(r'^(resource|data) "\w+" "\w+" \{$', above), f"{file}:{number + 1}"
    assert skips > 0
    scan = (TERRAFORM / "scan.sh").read_text()
    assert "--skip-check" not in scan and "--soft-fail" not in scan
    assert "--skip-download" in scan and "CKV_SKIP_PACKAGE_UPDATE_CHECK=true" in scan


def test_readme_documents_the_module():
    readme = (TERRAFORM / "README.md").read_text()
    for needed in ("terraform init", "terraform plan", "terraform apply", "terraform destroy",
                   "docker build", "docker push", "put-secret-value", "dagster.ecs.yaml",
                   "secrets.md", "scan.sh", "not run"):  # fmt: skip
        assert needed in readme, needed
    assert re.search(r"`terraform validate`.*not run", readme, flags=re.S)
    # every variable and output is in the README's tables
    module = _load()
    for name in list(module.variables) + list(module.outputs):
        assert f"`{name}`" in readme, name
    assert "deploy/terraform" in (DEPLOY / "README.md").read_text()
