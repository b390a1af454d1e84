"""Conventions every role under roles/ follows (the issue's quality bar).

Run by `make test-roles`. Roles are discovered, so new roles are held to the
same rules: role-prefixed defaults, each with a comment, each declared in
meta/argument_specs.yml with the same default, and templates starting with the
ansible_managed header.
"""

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").exists())


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def defaults(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return load(path) if path.exists() else {}


def spec_options(role):
    spec = load(ROLES_DIR / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options", {})


@pytest.mark.parametrize("role", ROLES)
def test_role_has_standard_files(role):
    for rel in ("tasks/main.yml", "meta/main.yml", "meta/argument_specs.yml", "README.md"):
        assert (ROLES_DIR / role / rel).exists(), f"{role}: missing {rel}"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_role_prefixed(role):
    for name in defaults(role):
        assert name.startswith(f"{role}_"), f"{role}: default {name} lacks the {role}_ prefix"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    if not path.exists():
        pytest.skip("no defaults")
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith(("#", "---")) and ":" in line:
            previous = lines[i - 1].strip() if i else ""
            assert previous.startswith("#"), f"{role}: {line.split(':')[0]} has no comment above it"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role):
    options = spec_options(role)
    for name, value in defaults(role).items():
        assert name in options, f"{role}: {name} missing from meta/argument_specs.yml"
        templated = isinstance(value, str) and "{{" in value  # resolved at run time; spec may omit it
        # A required option cannot carry a spec default (ansible refuses both);
        # defaults/main.yml may still list it as a documented placeholder.
        if not templated and not options[name].get("required"):
            assert options[name].get("default") == value, f"{role}: {name} default differs from argument_specs"
        assert "type" in options[name], f"{role}: {name} has no type in argument_specs"
    for name, option in options.items():
        if not option.get("required"):
            assert name in defaults(role), f"{role}: optional {name} has no default in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed(role):
    for template in sorted((ROLES_DIR / role / "templates").glob("*.j2")):
        lines = template.read_text().splitlines()
        first = lines[1] if lines[0].startswith("#!") else lines[0]  # a script keeps its shebang first
        assert first.startswith("{{ ansible_managed | comment"), f"{role}: {template.name} lacks the header"


def readme_example(role):
    """The example playbook of a role's README.md: its first ```yaml block, parsed."""
    text = (ROLES_DIR / role / "README.md").read_text()
    assert "```yaml\n" in text, f"{role}: README.md has no example playbook"
    return yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])


def example_uses(plays):
    """(role, entry point, vars) of every use of a queuefleet.fleet role in a list of plays."""
    for play in plays:
        for entry in play.get("roles", []):
            yield entry["role"], "main", entry.get("vars", {})
        for task in play.get("tasks", []):
            include = task.get("ansible.builtin.include_role") or task.get("ansible.builtin.import_role")
            if include:
                yield include["name"], include.get("tasks_from", "main"), task.get("vars", {})


@pytest.mark.parametrize("role", ROLES)
def test_readme_example_uses_the_role_by_its_collection_name_with_its_own_inputs(role):
    """Each README shows the role used alone: by its FQCN, with variables that its argument specs
    declare for that entry point, of the declared types (values Ansible would template are only
    checked to be there). The consumer test runs the redis one for real."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    uses = list(example_uses(readme_example(role)))
    assert any(name == f"queuefleet.fleet.{role}" for name, _, _ in uses), f"{role}: the example does not use queuefleet.fleet.{role}"
    for name, entry_point, given in uses:
        assert name.startswith("queuefleet.fleet."), f"{role}: {name} is not a collection name"
        used = name.removeprefix("queuefleet.fleet.")
        spec = load(ROLES_DIR / used / "meta" / "argument_specs.yml")["argument_specs"][entry_point]
        options = spec.get("options", {})
        unknown = sorted(set(given) - set(options))
        assert not unknown, f"{role}: the example gives {used} variables it does not take: {unknown}"
        literal = {k: v for k, v in given.items() if "{{" not in str(v)}
        required = {k: o for k, o in options.items() if o.get("required") and k not in given}
        assert not required, f"{role}: the example leaves out {used}'s required {sorted(required)}"
        result = ArgumentSpecValidator({k: options[k] for k in literal}).validate(literal)
        assert not result.error_messages, f"{role}: {result.error_messages}"


PROJECT = ROLES_DIR.parent


def collection_filter_names():
    """The filters of plugins/filter/ by the names their FilterModule gives them."""
    import importlib.util
    import sys

    # Filters import the collection's module_utils by their collection names (collections/ links the checkout).
    if str(PROJECT / "collections") not in sys.path:
        sys.path.insert(0, str(PROJECT / "collections"))
    names = set()
    for path in sorted((PROJECT / "plugins" / "filter").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"qf_filter_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names |= set(module.FilterModule().filters())
    return names


def test_collection_filters_are_called_by_their_collection_names():
    """Roles in a collection load no plugins of their own and resolve a filter's short name only
    among ansible.builtin's, so `| pools` or `map('queue_worker_pool_programs')` fails at run time
    (and only on the path that reaches it). Every use must be queuefleet.fleet.<name>."""
    import re

    names = collection_filter_names()
    assert "pools" in names and "queue_worker_pool_programs" in names
    pattern = re.compile(r"(?:\|\s*|\b(?:map|select|reject|selectattr|rejectattr)\(\s*['\"])(%s)\b" % "|".join(map(re.escape, names)))
    offenders = []
    for path in sorted([*PROJECT.glob("roles/**/*.yml"), *PROJECT.glob("roles/**/*.j2"),
                        *PROJECT.glob("playbooks/**/*.yml"), *PROJECT.glob("playbooks/**/*.j2"),
                        *PROJECT.glob("templates/**/*.j2")]):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and pattern.search(line):
                offenders.append(f"{path.relative_to(PROJECT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
